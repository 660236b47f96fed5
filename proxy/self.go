package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"
)

// ErrFrontIsSelf means the front address would be answered by one of the
// node's own listeners, so fronting would splice connections back into the
// node, each splice opening another until the limits stopped it.
var ErrFrontIsSelf = errors.New("front address is this node")

// resolveTimeout bounds the name lookups of CheckNotSelf.
const resolveTimeout = 10 * time.Second

// CheckNotSelf returns an error wrapping ErrFrontIsSelf if a connection to
// frontAddr could be accepted by one of listenAddrs, the host:port addresses
// the node listens on for clients.
//
// The front's host is resolved to all its A and AAAA records (an IP literal
// is taken as is; an empty or unspecified host such as "0.0.0.0" stands for
// loopback, which is where the kernel sends a connection to it). A resolved
// address F with the front's port P counts as self when some listener has
// port P and either
//
//   - binds a specific host (an IP, or a name resolved the same way) and F
//     equals one of its addresses, IPv4-mapped IPv6 and IPv4 being equal and
//     zones ignored; or
//   - binds the wildcard (empty host, "0.0.0.0" or "::", taken as every
//     family, as Go listens dual-stack on them) and F is loopback,
//     unspecified, or an address of one of this host's interfaces.
//
// A front on the node's own machine at another port, or at the same port on
// an interface address a specifically bound listener does not use, is not
// self: the kernel would deliver that connection to some other socket.
// Addresses the check cannot see are not caught: a public address that is
// forwarded to the node by NAT or a load balancer is self only if the caller
// lists it among listenAddrs.
//
// Every listener must name its port: pass bound addresses
// (net.Listener.Addr().String()), not a configured ":0". Failing to resolve
// any name is an error, not a pass.
func CheckNotSelf(frontAddr string, listenAddrs []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()

	fhost, fport, err := splitPort(ctx, frontAddr)
	if err != nil {
		return fmt.Errorf("front address %q: %w", frontAddr, err)
	}
	fronts, err := resolve(ctx, fhost)
	if err != nil {
		return fmt.Errorf("resolve front host %q: %w", fhost, err)
	}
	for i, f := range fronts {
		fronts[i] = dialTarget(f)
	}

	var local []netip.Addr // loaded once, only if a wildcard listener needs it
	for _, la := range listenAddrs {
		lhost, lport, err := splitPort(ctx, la)
		if err != nil {
			return fmt.Errorf("listen address %q: %w", la, err)
		}
		if lport == 0 {
			return fmt.Errorf("listen address %q has no fixed port; pass the bound address", la)
		}
		if lport != fport {
			continue
		}
		if isWildcard(lhost) {
			if local == nil {
				if local, err = interfaceAddrs(); err != nil {
					return err
				}
			}
			for _, f := range fronts {
				if f.IsLoopback() || f.IsUnspecified() || slices.Contains(local, f) {
					return selfError(frontAddr, f, fport, la, "an address of this host, and the listener binds the wildcard")
				}
			}
			continue
		}
		ips, err := resolve(ctx, lhost)
		if err != nil {
			return fmt.Errorf("resolve listen host %q: %w", lhost, err)
		}
		for _, f := range fronts {
			for _, l := range ips {
				if f == dialTarget(l) {
					return selfError(frontAddr, f, fport, la, "the listener's own address")
				}
			}
		}
	}
	return nil
}

func selfError(frontAddr string, f netip.Addr, port uint16, listener, why string) error {
	return fmt.Errorf("%w: front %s resolves to %s, which listener %s would accept (%s)", ErrFrontIsSelf,
		frontAddr, netip.AddrPortFrom(f, port), listener, why)
}

// splitPort splits host:port and resolves a service name in the port.
func splitPort(ctx context.Context, addr string) (string, uint16, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	p, err := net.DefaultResolver.LookupPort(ctx, "tcp", port)
	if err != nil {
		return "", 0, err
	}
	return host, uint16(p), nil
}

// resolve returns every address of host, normalised for comparison. The
// empty host is the unspecified address, as net.Dial treats it.
func resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if host == "" {
		return []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()}, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{norm(ip)}, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("no addresses for %q", host)
	}
	for i := range ips {
		ips[i] = norm(ips[i])
	}
	return ips, nil
}

// dialTarget is where the kernel delivers a connection to a: an unspecified
// destination goes to the loopback address of its family.
func dialTarget(a netip.Addr) netip.Addr {
	switch {
	case a == netip.IPv4Unspecified():
		return netip.AddrFrom4([4]byte{127, 0, 0, 1})
	case a == netip.IPv6Unspecified():
		return netip.IPv6Loopback()
	}
	return a
}

func norm(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && norm(ip).IsUnspecified()
}

// interfaceAddrs lists the addresses assigned to this host's interfaces.
func interfaceAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		var ip net.IP
		switch a := a.(type) {
		case *net.IPNet:
			ip = a.IP
		case *net.IPAddr:
			ip = a.IP
		default:
			continue
		}
		if x, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, norm(x))
		}
	}
	return out, nil
}
