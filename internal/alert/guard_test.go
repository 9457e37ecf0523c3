package alert_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/guardwatch/observatory/internal/alert"
)

func TestGuardRefusesInternalTargets(t *testing.T) {
	g := alert.NewGuard(nil)
	ctx := context.Background()
	refused := []string{
		"http://127.0.0.1/hook",
		"http://127.9.9.9:8080/hook",
		"http://localhost/hook", // resolves to loopback
		"http://169.254.169.254/latest/meta-data/",
		"http://[fd00:ec2::254]/latest/meta-data/",
		"http://100.100.100.200/latest/meta-data/",
		"http://168.63.129.16/machine",
		"http://10.0.0.1/", "http://172.16.5.4/", "http://192.168.1.1/",
		"http://100.64.0.1/", // CGNAT
		"http://0.0.0.0/", "http://[::]/", "http://[::1]/",
		"http://[::ffff:10.0.0.1]/", "http://[::ffff:127.0.0.1]/",
		"http://[::ffff:169.254.169.254]/",
		"http://[fe80::1]/", "http://[fc00::1]/",
		"http://[2002:7f00:1::]/",  // 6to4 of 127.0.0.1
		"http://[64:ff9b::a00:1]/", // NAT64 of 10.0.0.1
		"http://224.0.0.1/", "http://255.255.255.255/",
		"http://does-not-exist.invalid/",
	}
	for _, u := range refused {
		t.Run(u, func(t *testing.T) {
			err := g.CheckURL(ctx, u)
			var se *alert.SpecError
			require.ErrorAs(t, err, &se)
			require.Equal(t, "channel.url", se.Field)
		})
	}
	for _, u := range []string{"https://93.184.215.14/hook", "http://[2606:4700::1111]/x",
		"http://[64:ff9b::5db8:d70e]/"} {
		require.NoError(t, g.CheckURL(ctx, u), u)
	}
}

func TestGuardRefusesMalformedTargets(t *testing.T) {
	g := alert.NewGuard(nil)
	for _, u := range []string{"", "ftp://example.com/", "//example.com/x", "http:///x",
		"https://user:pw@93.184.215.14/", "https://93.184.215.14/#frag",
		"https://93.184.215.14/a b", "file:///etc/passwd"} {
		var se *alert.SpecError
		require.ErrorAs(t, g.CheckURL(context.Background(), u), &se, u)
	}
}

func TestGuardAllowList(t *testing.T) {
	allow, err := alert.ParseCIDRs([]string{"127.0.0.1/32", "10.1.0.0/16", "fd12::1"})
	require.NoError(t, err)
	g := alert.NewGuard(allow)
	ctx := context.Background()
	require.NoError(t, g.CheckURL(ctx, "http://127.0.0.1:9999/hook"))
	require.NoError(t, g.CheckURL(ctx, "http://[::ffff:127.0.0.1]/hook"))
	require.NoError(t, g.CheckURL(ctx, "http://10.1.2.3/hook"))
	require.NoError(t, g.CheckIP(netip.MustParseAddr("fd12::1")))
	require.Error(t, g.CheckURL(ctx, "http://127.0.0.2/hook"))
	require.Error(t, g.CheckURL(ctx, "http://10.2.0.1/hook"))
	require.Error(t, g.CheckURL(ctx, "http://169.254.169.254/"))

	_, err = alert.ParseCIDRs([]string{"not-a-cidr"})
	require.Error(t, err)
}

// TestGuardChecksTheDialledAddress sends to a receiver the guard refuses,
// as after a DNS change between save and send: the connection is refused
// at connect time and the receiver sees nothing.
func TestGuardChecksTheDialledAddress(t *testing.T) {
	hit := false
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		hit = true
	}))
	t.Cleanup(srv.Close)
	c := alert.NewGuard(nil).Client(5 * time.Second)
	_, err := c.Post(srv.URL, "application/json", nil)
	require.ErrorIs(t, err, alert.ErrForbiddenAddress)
	require.False(t, hit)

	allow, _ := alert.ParseCIDRs([]string{"127.0.0.1"})
	resp, err := alert.NewGuard(allow).Client(5*time.Second).Post(srv.URL, "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.True(t, hit)
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	h := newHarness(t)
	target := newReceiver(t)
	redirect := httptest.NewServer(http.RedirectHandler(target.srv.URL, http.StatusFound))
	t.Cleanup(redirect.Close)
	sc := scope(t, "acme", "proj_prod")
	sub, _ := h.subscribe(t, sc, alert.Spec{Match: blockedHigh,
		Channel: alert.Channel{Type: alert.ChannelWebhook, URL: redirect.URL}})
	h.start(t, "r1")
	h.publish(t, h.decision("acme", "proj_prod"))
	h.settle(t)

	require.Empty(t, target.requests())
	ds, err := h.store.Deliveries(context.Background(), sc, sub.ID)
	require.NoError(t, err)
	require.Len(t, ds, 1)
	require.Equal(t, alert.StatusFailed, ds[0].Status)
	require.Equal(t, 1, ds[0].Attempts, "a redirect is not retried")
	require.Equal(t, "redirect not followed (HTTP 302)", ds[0].Error)
}
