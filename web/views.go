package web

// Chrome is the frame around every page: the signed-in viewer, the
// project in view and the navigation.
type Chrome struct {
	SignedIn bool
	Subject  string
	Account  string
	CSRF     string   // sign-out form token
	Projects []string // the viewer's projects, for the switcher
	Project  string   // the project in view; empty on pages about none
	Section  string   // overview, traces, sessions, exports, alerts or access
	// CanSessions says whether the viewer may open the project's sessions.
	CanSessions bool
	// CanExports says whether the viewer may open the project's export
	// log: those who may export (their own exports) and admins.
	CanExports bool
	// CanAlerts says whether the viewer may open the project's alerts.
	CanAlerts bool
	// CanExplain says whether the viewer may open the project's access page.
	CanExplain bool
	// Bare hides everything about the viewer, for pages whose body must
	// not depend on who asks (the error page).
	Bare bool
}

// ErrorView is the error page.
type ErrorView struct {
	Chrome
	Status  int
	Title   string
	Message string
}

// SigninView is the sign-in page.
type SigninView struct {
	Chrome
	CSRF    string
	Next    string
	Error   string
	Token   string         // a token from a sign-in link, awaiting confirmation
	Confirm *SigninConfirm // who the link's token signs in as
}

// SigninConfirm names the identity a sign-in link carries.
type SigninConfirm struct {
	Subject  string
	Account  string
	Projects []string
}
