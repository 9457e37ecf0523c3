package alert

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrForbiddenAddress is returned when a notification target is, or
// resolves to, an address the guard refuses.
var ErrForbiddenAddress = errors.New("alert: target address not allowed")

// refusedTarget is the one message a refused or unresolvable target gets,
// so that saving a subscription cannot tell which internal names exist.
const refusedTarget = "must name a host that resolves from this server, and only to public " +
	"addresses (a name that does not resolve is refused, as are loopback, private, " +
	"link-local, CGNAT, unique-local and metadata addresses)"

// blocked are the ranges no notification may reach unless allowed: the
// machine itself, private networks, link-local (cloud metadata at
// 169.254.169.254), CGNAT (100.100.100.200 on some clouds), documentation,
// benchmarking, multicast and reserved space, and the IPv6 equivalents.
var blocked = mustPrefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
	"198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	"168.63.129.16/32", // Azure host endpoint, on a public address
	"::/96",            // unspecified, loopback and IPv4-compatible
	"64:ff9b:1::/48", "100::/64", "2001::/32", "2001:db8::/32",
	"fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// ParseCIDRs reads an allow-list such as "127.0.0.1/32"; a bare address
// is its own /32 or /128.
func ParseCIDRs(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("allow-list entry %q: %w", s, err)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("allow-list entry %q: %w", s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Guard decides which addresses notifications may reach. It is checked
// when a subscription is saved (every address the host resolves to) and
// again when a notification is sent, on the address actually dialled, so
// DNS changes and rebinding cannot route around it. Redirects are never
// followed.
type Guard struct {
	allow    []netip.Prefix
	resolver *net.Resolver
}

// NewGuard returns a guard that refuses the blocked ranges except the
// operator's allow-list.
func NewGuard(allow []netip.Prefix) *Guard {
	return &Guard{allow: allow, resolver: net.DefaultResolver}
}

// CheckIP returns ErrForbiddenAddress unless the address may be reached.
// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry,
// and so are 6to4 and NAT64 addresses.
func (g *Guard) CheckIP(ip netip.Addr) error {
	ip = ip.WithZone("").Unmap()
	if !ip.IsValid() {
		return ErrForbiddenAddress
	}
	for _, p := range g.allow {
		if p.Contains(ip) {
			return nil
		}
	}
	for _, p := range blocked {
		if p.Contains(ip) {
			return ErrForbiddenAddress
		}
	}
	if v4, ok := embeddedV4(ip); ok {
		return g.CheckIP(v4)
	}
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsMulticast() ||
		ip.IsUnspecified() || ip.IsInterfaceLocalMulticast() {
		return ErrForbiddenAddress
	}
	return nil
}

var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// embeddedV4 returns the IPv4 address inside a 6to4 (2002::/16) or
// well-known NAT64 (64:ff9b::/96) address.
func embeddedV4(ip netip.Addr) (netip.Addr, bool) {
	if !ip.Is6() {
		return netip.Addr{}, false
	}
	b := ip.As16()
	switch {
	case b[0] == 0x20 && b[1] == 0x02:
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), true
	case nat64.Contains(ip):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}), true
	}
	return netip.Addr{}, false
}

// CheckURL checks a target when it is saved: the URL's syntax, and every
// address its host resolves to. A refusal is a *SpecError.
func (g *Guard) CheckURL(ctx context.Context, raw string) error {
	if err := checkURLSyntax(raw); err != nil {
		return err
	}
	u, _ := url.Parse(raw)
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		if g.CheckIP(ip) != nil {
			return specErr("channel.url", refusedTarget)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := g.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return specErr("channel.url", refusedTarget)
	}
	for _, a := range addrs {
		if g.CheckIP(a) != nil {
			return specErr("channel.url", refusedTarget)
		}
	}
	return nil
}

// control runs after DNS resolution, right before each connect, with the
// address that is about to be dialled.
func (g *Guard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, address)
	}
	if err := g.CheckIP(ap.Addr()); err != nil {
		return fmt.Errorf("%w: %s", err, ap.Addr())
	}
	return nil
}

// Client returns an HTTP client for notifications: each connection is
// checked by the guard at connect time, no proxy from the environment is
// used (it would dial on the client's behalf), and redirects are returned
// instead of followed.
func (g *Guard) Client(timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second,
		Control: g.control}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}
}
