{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "infergw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the prefix of every resource name. The release name alone when it already
contains the chart name, so `helm install infergw` gives infergw-picker, not infergw-infergw-picker. */}}
{{- define "infergw.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "infergw.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "infergw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: infergw
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "picker"). */}}
{{- define "infergw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "infergw.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's resources; same argument as infergw.selectorLabels. */}}
{{- define "infergw.componentLabels" -}}
{{ include "infergw.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "infergw.controlPlane.fullname" -}}
{{- printf "%s-controlplane" (include "infergw.fullname" .) -}}
{{- end -}}

{{- define "infergw.picker.fullname" -}}
{{- printf "%s-picker" (include "infergw.fullname" .) -}}
{{- end -}}

{{/* The picker Service: the name an InferencePool's endpointPickerRef names. */}}
{{- define "infergw.picker.serviceName" -}}
{{- default (include "infergw.picker.fullname" .) .Values.picker.service.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "infergw.envoy.fullname" -}}
{{- printf "%s-envoy" (include "infergw.fullname" .) -}}
{{- end -}}

{{/* The xDS address Envoy dials: the control plane Service's fixed ClusterIP when one is set
(clusters without DNS), else its cluster DNS name; and the xDS port. */}}
{{- define "infergw.controlPlane.xdsAddress" -}}
{{- $host := printf "%s.%s.svc" (include "infergw.controlPlane.fullname" .) .Release.Namespace -}}
{{- with .Values.controlPlane.service.clusterIP -}}
{{- $host = . -}}
{{- end -}}
{{- printf "%s:%d" $host (int .Values.controlPlane.xdsPort) -}}
{{- end -}}

{{/* The infergw image reference. */}}
{{- define "infergw.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The --kubernetes source flags shared by the control plane and the picker. */}}
{{- define "infergw.kubeSourceArgs" -}}
- --kubernetes
{{- range .Values.watchNamespaces }}
- --namespace
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Pod security context; call with (dict "root" $ "uid" 65532). The uid is the image's
non-root user: 65532 in distroless nonroot, 101 (envoy) in the Envoy image. */}}
{{- define "infergw.podSecurityContext" -}}
{{- $psc := deepCopy .root.Values.podSecurityContext -}}
{{- $_ := set $psc "runAsUser" .uid -}}
{{- $_ := set $psc "runAsGroup" .uid -}}
{{- $_ := set $psc "fsGroup" .uid -}}
{{- toYaml $psc -}}
{{- end -}}

{{/* Where TLS secrets are mounted in every container that uses them. */}}
{{- define "infergw.tlsMountPath" -}}/etc/infergw/tls{{- end -}}

{{/* Where the Envoy container (and its bootstrap initContainer) mounts tls.envoySecretName.
The control plane names files there in the picker clusters it sends Envoy (--picker-tls-*):
Envoy, not the control plane, reads them. */}}
{{- define "infergw.envoy.tlsMountPath" -}}{{ include "infergw.tlsMountPath" . }}{{- end -}}

{{/* The TLS secret names; empty values default to <fullname>-<component>-tls. */}}
{{- define "infergw.tls.controlPlaneSecret" -}}
{{- default (printf "%s-tls" (include "infergw.controlPlane.fullname" .)) .Values.tls.controlPlaneSecretName -}}
{{- end -}}
{{- define "infergw.tls.pickerSecret" -}}
{{- default (printf "%s-tls" (include "infergw.picker.fullname" .)) .Values.tls.pickerSecretName -}}
{{- end -}}
{{- define "infergw.tls.envoySecret" -}}
{{- default (printf "%s-tls" (include "infergw.envoy.fullname" .)) .Values.tls.envoySecretName -}}
{{- end -}}

{{/* A PodDisruptionBudget spec body; call with (dict "pdb" .Values.x.podDisruptionBudget). */}}
{{- define "infergw.pdbBudget" -}}
{{- if not (kindIs "invalid" .pdb.minAvailable) }}
minAvailable: {{ .pdb.minAvailable }}
{{- else }}
maxUnavailable: {{ .pdb.maxUnavailable }}
{{- end }}
{{- end -}}

{{/* A map as "k1=v1,k2=v2", keys sorted (a flag value). */}}
{{- define "infergw.keyValues" -}}
{{- $out := list }}
{{- range $k := keys . | sortAlpha }}
{{- $out = append $out (printf "%s=%s" $k (get $ $k)) }}
{{- end }}
{{- join "," $out }}
{{- end -}}
