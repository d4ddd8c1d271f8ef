{{/* RBAC rules, one place for them. The control plane and the picker read the same
resources through the same Kubernetes source; only the control plane writes status, and only
through the status subresources. */}}

{{/* Read access to the namespaced resources the Kubernetes source watches. */}}
{{- define "infergw.rbac.readNamespacedRules" -}}
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["inference.networking.x-k8s.io"]
  resources: ["inferenceobjectives", "inferencemodelrewrites"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gateways", "httproutes"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods", "services"]
  verbs: ["get", "list", "watch"]
{{- end -}}

{{/* Read access to the cluster-scoped GatewayClasses. */}}
{{- define "infergw.rbac.readClusterRules" -}}
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gatewayclasses"]
  verbs: ["get", "list", "watch"]
{{- end -}}

{{/* Status writes of the control plane (--write-status). */}}
{{- define "infergw.rbac.statusRules" -}}
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools/status"]
  verbs: ["update", "patch"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes/status", "gateways/status"]
  verbs: ["update", "patch"]
{{- end -}}

{{/* What only the control plane reads: ReferenceGrants, the TLS Secrets that HTTPS
listeners name (the source lists Secrets of type kubernetes.io/tls only) and the
EndpointSlices of Service backends. */}}
{{- define "infergw.rbac.controlPlaneReadRules" -}}
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["referencegrants"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
{{- end -}}

{{/* Cluster-scoped access of the control plane: Namespaces (allowedRoutes selectors) and
the GatewayClass status. */}}
{{- define "infergw.rbac.controlPlaneClusterRules" -}}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- if .Values.controlPlane.writeStatus }}
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gatewayclasses/status"]
  verbs: ["update", "patch"]
{{- end }}
{{- end -}}

{{/* The namespaced rules of one component; call with (dict "root" $ "component" "controlplane"). */}}
{{- define "infergw.rbac.namespacedRules" -}}
{{ include "infergw.rbac.readNamespacedRules" .root }}
{{- if eq .component "controlplane" }}
{{ include "infergw.rbac.controlPlaneReadRules" .root }}
{{- end }}
{{- if and (eq .component "controlplane") .root.Values.controlPlane.writeStatus }}
{{ include "infergw.rbac.statusRules" .root }}
{{- end }}
{{- end -}}

{{/* The per-Gateway Services (gatewayServices.enabled): the control plane creates, updates
and deletes Services in the release namespace only (a Role there); it reads them through
the read rules above. */}}
{{- define "infergw.rbac.gatewayServiceRules" -}}
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "update", "delete"]
{{- end -}}
