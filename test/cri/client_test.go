package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// sandbox is a pod sandbox as CRI reports it.
type sandbox struct {
	ID    string
	Name  string
	IP    netip.Addr
	Netns string // the pod's network namespace (a bind mount under the state dir)
	State criv1.PodSandboxState
}

// podConfig is what the kubelet sends for a pod without anything special:
// its own network, IPC and PID namespaces, and a cgroup parent of ours.
func (c *containerd) podConfig(name string, ports []*criv1.PortMapping) *criv1.PodSandboxConfig {
	uid := prefix + c.name + "-" + name
	return &criv1.PodSandboxConfig{
		Metadata:     &criv1.PodSandboxMetadata{Name: name, Namespace: "lcri", Uid: uid},
		Hostname:     name,
		LogDirectory: filepath.Join(c.dir, "pods", uid),
		PortMappings: ports,
		Labels:       map[string]string{"app": "lcri"},
		Linux: &criv1.LinuxPodSandboxConfig{
			CgroupParent: cgroupParent(c.name),
			SecurityContext: &criv1.LinuxSandboxSecurityContext{
				NamespaceOptions: &criv1.NamespaceOption{
					Network: criv1.NamespaceMode_POD, Pid: criv1.NamespaceMode_CONTAINER, Ipc: criv1.NamespaceMode_POD,
				},
			},
		},
	}
}

// runPod calls RunPodSandbox and returns the new sandbox id and how long
// the call took.
func (c *containerd) runPod(ctx context.Context, name string, ports ...*criv1.PortMapping) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	start := time.Now()
	r, err := c.rt.RunPodSandbox(ctx, &criv1.RunPodSandboxRequest{Config: c.podConfig(name, ports)})
	took := time.Since(start)
	if err != nil {
		return "", took, fmt.Errorf("RunPodSandbox %s: %w", name, err)
	}
	return r.PodSandboxId, took, nil
}

// status reads a sandbox's state, address and network namespace (from the
// verbose info's runtime spec, where the kubelet's tools find it too).
func (c *containerd) status(ctx context.Context, id string) (*sandbox, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := c.rt.PodSandboxStatus(ctx, &criv1.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		return nil, fmt.Errorf("PodSandboxStatus %s: %w", id, err)
	}
	s := &sandbox{ID: id, Name: r.Status.GetMetadata().GetName(), State: r.Status.GetState()}
	if ip := r.Status.GetNetwork().GetIp(); ip != "" {
		if s.IP, err = netip.ParseAddr(ip); err != nil {
			return nil, fmt.Errorf("sandbox %s: address %q: %w", id, ip, err)
		}
	}
	s.Netns, err = netnsFromInfo(r.Info["info"])
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", id, err)
	}
	return s, nil
}

// netnsFromInfo finds the network namespace path in containerd's verbose
// sandbox info.
func netnsFromInfo(info string) (string, error) {
	var v struct {
		RuntimeSpec struct {
			Linux struct {
				Namespaces []struct {
					Type string `json:"type"`
					Path string `json:"path"`
				} `json:"namespaces"`
			} `json:"linux"`
		} `json:"runtimeSpec"`
	}
	if err := json.Unmarshal([]byte(info), &v); err != nil {
		return "", fmt.Errorf("verbose info: %w", err)
	}
	for _, ns := range v.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			if ns.Path == "" {
				return "", fmt.Errorf("verbose info: the network namespace has no path")
			}
			return ns.Path, nil
		}
	}
	return "", fmt.Errorf("verbose info: no network namespace in the runtime spec")
}

// stopPod is StopPodSandbox: containerd's first CNI DEL, with the netns.
func (c *containerd) stopPod(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := c.rt.StopPodSandbox(ctx, &criv1.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("StopPodSandbox %s: %w", id, err)
	}
	return nil
}

// removePod is RemovePodSandbox: containerd's second CNI DEL, with an
// empty CNI_NETNS and no prevResult.
func (c *containerd) removePod(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := c.rt.RemovePodSandbox(ctx, &criv1.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("RemovePodSandbox %s: %w", id, err)
	}
	return nil
}

// sandboxes lists the ids CRI knows.
func (c *containerd) sandboxes(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := c.rt.ListPodSandbox(ctx, &criv1.ListPodSandboxRequest{})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, s := range r.Items {
		ids = append(ids, s.Id)
	}
	return ids, nil
}

func tcpPort(container, host int32) *criv1.PortMapping {
	return &criv1.PortMapping{Protocol: criv1.Protocol_TCP, ContainerPort: container, HostPort: host}
}
