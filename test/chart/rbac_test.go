package chart

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// permission is one (API group, resource, verb) a ServiceAccount holds in a scope: "" for
// cluster-wide (ClusterRoleBinding), else the namespace of the RoleBinding.
type permission struct {
	scope, group, resource, verb string
}

func (p permission) String() string {
	scope := p.scope
	if scope == "" {
		scope = "<cluster>"
	}
	return fmt.Sprintf("%s %s/%s %s", scope, p.group, p.resource, p.verb)
}

var readVerbs = []string{"get", "list", "watch"}

// readResources are what the Kubernetes source watches, by API group.
var readResources = map[string][]string{
	"inference.networking.k8s.io":   {"inferencepools"},
	"inference.networking.x-k8s.io": {"inferenceobjectives", "inferencemodelrewrites"},
	"gateway.networking.k8s.io":     {"gateways", "httproutes", "gatewayclasses"},
	"":                              {"pods", "services"},
}

// controlPlaneReadResources are what only the control plane reads (ReferenceGrants, the TLS
// Secrets of HTTPS listeners, Namespaces for allowedRoutes selectors).
var controlPlaneReadResources = map[string][]string{
	"gateway.networking.k8s.io": {"referencegrants"},
	"":                          {"secrets", "namespaces"},
	"discovery.k8s.io":          {"endpointslices"},
}

// statusResources are what the control plane writes (and nothing else writes anything).
var statusResources = map[string][]string{
	"inference.networking.k8s.io": {"inferencepools/status"},
	"gateway.networking.k8s.io":   {"httproutes/status", "gateways/status", "gatewayclasses/status"},
}

var statusVerbs = []string{"update", "patch"}

// gatewayServiceVerbs are what the control plane does to the per-Gateway Services
// (gatewayServices.enabled), in the release namespace only.
var gatewayServiceVerbs = []string{"create", "update", "delete"}

var clusterScoped = map[string]bool{"gatewayclasses": true, "gatewayclasses/status": true, "namespaces": true}

// wantPermissions is exactly what a component must hold: reads in every watched scope (or
// cluster-wide), GatewayClasses cluster-wide, status writes for the control plane only.
func wantPermissions(component string, watchNamespaces []string, writeStatus, gatewayServices bool) map[permission]bool {
	scopes := watchNamespaces
	if len(scopes) == 0 {
		scopes = []string{""}
	}
	want := map[permission]bool{}
	add := func(scope, group, resource string, verbs []string) {
		if clusterScoped[resource] {
			scope = ""
		}
		for _, v := range verbs {
			want[permission{scope, group, resource, v}] = true
		}
	}
	if component == "controlplane" && gatewayServices {
		add(releaseNamespace, "", "services", gatewayServiceVerbs)
	}
	for _, scope := range scopes {
		for group, resources := range readResources {
			for _, r := range resources {
				add(scope, group, r, readVerbs)
			}
		}
		if component == "controlplane" {
			for group, resources := range controlPlaneReadResources {
				for _, r := range resources {
					add(scope, group, r, readVerbs)
				}
			}
		}
		if component == "controlplane" && writeStatus {
			for group, resources := range statusResources {
				for _, r := range resources {
					add(scope, group, r, statusVerbs)
				}
			}
		}
	}
	return want
}

// heldPermissions follows every binding whose subject is the ServiceAccount to its role and
// expands the rules. Wildcards and non-resource URLs fail the test outright.
func heldPermissions(t *testing.T, o *objects, saNamespace, saName string) map[permission]bool {
	t.Helper()
	held := map[permission]bool{}
	addRules := func(scope, roleName string, rules []rbacv1.PolicyRule) {
		for _, r := range rules {
			if len(r.NonResourceURLs) > 0 {
				t.Errorf("role %s grants non-resource URLs %v", roleName, r.NonResourceURLs)
			}
			for _, list := range [][]string{r.APIGroups, r.Resources, r.Verbs} {
				for _, v := range list {
					if strings.Contains(v, "*") {
						t.Errorf("role %s has a wildcard %q in rule %+v", roleName, v, r)
					}
				}
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						held[permission{scope, g, res, v}] = true
					}
				}
			}
		}
	}
	bound := func(subjects []rbacv1.Subject) bool {
		for _, s := range subjects {
			if s.Kind == "ServiceAccount" && s.Name == saName && s.Namespace == saNamespace {
				return true
			}
		}
		return false
	}
	for _, b := range o.clusterRoleBindings {
		if !bound(b.Subjects) {
			continue
		}
		if b.RoleRef.Kind != "ClusterRole" {
			t.Errorf("ClusterRoleBinding %s refers to a %s", b.Name, b.RoleRef.Kind)
		}
		cr := findClusterRole(o, b.RoleRef.Name)
		if cr == nil {
			t.Errorf("ClusterRoleBinding %s refers to missing ClusterRole %s", b.Name, b.RoleRef.Name)
			continue
		}
		addRules("", cr.Name, cr.Rules)
	}
	for _, b := range o.roleBindings {
		if !bound(b.Subjects) {
			continue
		}
		var rules []rbacv1.PolicyRule
		switch b.RoleRef.Kind {
		case "Role":
			found := false
			for _, r := range o.roles {
				if r.Name == b.RoleRef.Name && r.Namespace == b.Namespace {
					rules, found = r.Rules, true
				}
			}
			if !found {
				t.Errorf("RoleBinding %s/%s refers to missing Role %s", b.Namespace, b.Name, b.RoleRef.Name)
			}
		case "ClusterRole":
			if cr := findClusterRole(o, b.RoleRef.Name); cr != nil {
				rules = cr.Rules
			} else {
				t.Errorf("RoleBinding %s/%s refers to missing ClusterRole %s", b.Namespace, b.Name, b.RoleRef.Name)
			}
		}
		addRules(b.Namespace, b.RoleRef.Name, rules)
	}
	return held
}

func findClusterRole(o *objects, name string) *rbacv1.ClusterRole {
	for _, cr := range o.clusterRoles {
		if cr.Name == name {
			return cr
		}
	}
	return nil
}

func diffPermissions(a, b map[permission]bool) []string {
	var out []string
	for p := range a {
		if !b[p] {
			out = append(out, p.String())
		}
	}
	sort.Strings(out)
	return out
}

// TestRBACLeastPrivilege: each component's ServiceAccount (the one its Deployment runs as)
// holds exactly the permissions it needs — no more, no less — for cluster-wide and
// per-namespace installs, with and without status writes; Envoy holds none.
func TestRBACLeastPrivilege(t *testing.T) {
	cases := []struct {
		set             string
		namespaces      []string
		writeStatus     bool
		gatewayServices bool
	}{
		{"default", nil, true, false},
		{"watchnamespaces", []string{"team-a", "team-b"}, true, false},
		{"everything", []string{"serving"}, false, false},
		{"gatewayservices", nil, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.set, func(t *testing.T) {
			o := renderObjects(t, valueSetByName(t, tc.set))
			for _, component := range []string{"controlplane", "picker", "envoy"} {
				d := o.deploymentByComponent(t, component)
				sa := d.Spec.Template.Spec.ServiceAccountName
				if sa == "" {
					t.Fatalf("%s runs as the default ServiceAccount", d.Name)
				}
				held := heldPermissions(t, o, d.Namespace, sa)
				want := map[permission]bool{}
				if component != "envoy" {
					want = wantPermissions(component, tc.namespaces, tc.writeStatus, tc.gatewayServices)
				}
				if extra := diffPermissions(held, want); len(extra) > 0 {
					t.Errorf("%s holds permissions it does not need:\n  %s", component, strings.Join(extra, "\n  "))
				}
				if missing := diffPermissions(want, held); len(missing) > 0 {
					t.Errorf("%s lacks permissions it needs:\n  %s", component, strings.Join(missing, "\n  "))
				}
			}
			if len(tc.namespaces) > 0 && len(o.roles) != 2*len(tc.namespaces) {
				t.Errorf("%d Roles, want one per component and watched namespace (%d)", len(o.roles), 2*len(tc.namespaces))
			}
			if len(tc.namespaces) == 0 && !tc.gatewayServices && len(o.roles)+len(o.roleBindings) != 0 {
				t.Errorf("cluster-wide install renders %d Roles and %d RoleBindings", len(o.roles), len(o.roleBindings))
			}
			for _, sa := range o.serviceAccounts {
				if strings.HasSuffix(sa.Name, "-envoy") && (sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken) {
					t.Errorf("Envoy's ServiceAccount %s mounts an API token it never uses", sa.Name)
				}
			}
		})
	}
}

func valueSetByName(t *testing.T, name string) valueSet {
	t.Helper()
	for _, vs := range valueSets {
		if vs.name == name {
			return vs
		}
	}
	t.Fatalf("no value set %q", name)
	return valueSet{}
}
