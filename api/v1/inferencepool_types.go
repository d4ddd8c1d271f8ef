package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// InferencePool is a group of model-server pods that share a base model and an endpoint
// picker. A Gateway routes to it through an HTTPRoute backendRef.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=infpool
// +kubebuilder:storageversion
// +kubebuilder:metadata:annotations="api-approved.kubernetes.io=https://github.com/kubernetes-sigs/gateway-api-inference-extension/pull/1173"
type InferencePool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   InferencePoolSpec   `json:"spec,omitempty"`
	Status InferencePoolStatus `json:"status,omitempty"`
}

// InferencePoolList is a list of InferencePools.
//
// +kubebuilder:object:root=true
type InferencePoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []InferencePool `json:"items"`
}

// InferencePoolSpec selects the pool's pods and names its endpoint picker.
type InferencePoolSpec struct {
	// Selector picks the model-server pods of this pool by label, in the pool's namespace.
	//
	// +required
	Selector LabelSelector `json:"selector"`

	// TargetPorts are the ports the model servers listen on. Every selected pod serves on
	// every listed port.
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:XValidation:message="port number must be unique",rule="self.all(p1, self.exists_one(p2, p1.number==p2.number))"
	// +listType=atomic
	// +required
	TargetPorts []Port `json:"targetPorts"`

	// AppProtocol is the protocol spoken by the model servers.
	//
	// +optional
	AppProtocol AppProtocol `json:"appProtocol,omitempty"`

	// EndpointPickerRef names the service that picks an endpoint for each request.
	//
	// +required
	EndpointPickerRef EndpointPickerRef `json:"endpointPickerRef"`
}

// AppProtocol is the application protocol of the model servers.
//
// +kubebuilder:validation:Enum=http;"kubernetes.io/h2c"
type AppProtocol string

const (
	// AppProtocolHTTP is HTTP/1.1.
	AppProtocolHTTP AppProtocol = "http"
	// AppProtocolH2C is cleartext HTTP/2.
	AppProtocolH2C AppProtocol = "kubernetes.io/h2c"
)

// LabelSelector is a label query limited to equality on labels.
type LabelSelector struct {
	// MatchLabels must all match a pod's labels for it to belong to the pool.
	//
	// +kubebuilder:validation:MinProperties=1
	// +kubebuilder:validation:MaxProperties=64
	// +required
	MatchLabels map[LabelKey]LabelValue `json:"matchLabels"`
}

// LabelKey is a Kubernetes label key.
//
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`
type LabelKey string

// LabelValue is a Kubernetes label value.
//
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`
type LabelValue string

// Port is a network port of the model servers or of the endpoint picker.
type Port struct {
	// Number is the port number.
	//
	// +required
	Number PortNumber `json:"number"`
}

// PortNumber is a TCP port number.
//
// +kubebuilder:validation:Minimum=1
// +kubebuilder:validation:Maximum=65535
type PortNumber int32

// EndpointPickerRef names the endpoint picker of a pool.
//
// +kubebuilder:validation:XValidation:message="port is required when kind is 'Service' or unspecified (defaults to 'Service')",rule="self.kind != 'Service' || has(self.port)"
type EndpointPickerRef struct {
	// Group of the referent; empty means the core API group.
	//
	// +optional
	// +kubebuilder:default=""
	Group *Group `json:"group,omitempty"`

	// Kind of the referent.
	//
	// +optional
	// +kubebuilder:default=Service
	Kind Kind `json:"kind,omitempty"`

	// Name of the referent, in the pool's namespace.
	//
	// +required
	Name ObjectName `json:"name"`

	// Port of the referent; required when Kind is Service.
	//
	// +optional
	Port *Port `json:"port,omitempty"`

	// FailureMode says what the proxy does when the picker cannot be reached.
	//
	// +optional
	// +kubebuilder:default=FailClose
	FailureMode EndpointPickerFailureMode `json:"failureMode,omitempty"`
}

// EndpointPickerFailureMode is the proxy's behaviour when the picker is unreachable.
//
// +kubebuilder:validation:Enum=FailOpen;FailClose
type EndpointPickerFailureMode string

const (
	// EndpointPickerFailOpen sends the request to any ready endpoint of the pool.
	EndpointPickerFailOpen EndpointPickerFailureMode = "FailOpen"
	// EndpointPickerFailClose rejects the request.
	EndpointPickerFailClose EndpointPickerFailureMode = "FailClose"
)

// Group is a Kubernetes API group name.
//
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:Pattern=`^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
type Group string

// Kind is a Kubernetes resource kind.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`
type Kind string

// ObjectName is a Kubernetes object name.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
type ObjectName string

// Namespace is a Kubernetes namespace name.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
type Namespace string

// InferencePoolStatus reports, per parent Gateway, whether the pool was accepted.
type InferencePoolStatus struct {
	// Parents is the status of the pool for each parent that references it.
	//
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Parents []ParentStatus `json:"parents,omitempty"`
}

// ParentStatus is the status of a pool with respect to one parent.
type ParentStatus struct {
	// Conditions: Accepted, ResolvedRefs.
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// ParentRef is the parent this status is about.
	//
	// +required
	ParentRef ParentReference `json:"parentRef"`
}

// ParentReference names a parent resource, usually a Gateway.
type ParentReference struct {
	// +optional
	// +kubebuilder:default="gateway.networking.k8s.io"
	Group *Group `json:"group,omitempty"`
	// +optional
	// +kubebuilder:default=Gateway
	Kind Kind `json:"kind,omitempty"`
	// +required
	Name ObjectName `json:"name"`
	// +optional
	Namespace Namespace `json:"namespace,omitempty"`
}

// Condition types and reasons of an InferencePool parent status.
const (
	PoolConditionAccepted     = "Accepted"
	PoolReasonAccepted        = "Accepted"
	PoolReasonNotSupported    = "NotSupportedByGateway"
	PoolConditionResolvedRefs = "ResolvedRefs"
	PoolReasonResolvedRefs    = "ResolvedRefs"
	PoolReasonInvalidExtRef   = "InvalidExtensionRef"
)
