package web

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/guardwatch/observatory/internal/alert"
	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/store"
)

// alertsPage lists the project's subscriptions, with the create form for
// viewers who may manage them.
func (s *server) alertsPage(w http.ResponseWriter, r *http.Request) error {
	sc, err := s.projectScope(r, authz.ViewAlerts)
	if err != nil {
		return err
	}
	v, err := s.alertsView(r, sc)
	if err != nil {
		return err
	}
	return s.render(w, r, http.StatusOK, AlertsPage(v))
}

func (s *server) alertsView(r *http.Request, sc store.Scope) (AlertsView, error) {
	ctx, cancel := context.WithTimeout(r.Context(), s.QueryTimeout)
	defer cancel()
	project := sc.Project()
	v := AlertsView{Chrome: s.chrome(r, project)}
	v.Section = "alerts"
	var err error
	if v.CanManage, err = s.canManage(ctx, project); err != nil {
		return v, err
	}
	subs, err := s.Alerts.Store.List(ctx, sc)
	if err != nil {
		return v, err
	}
	loc, now := viewerZone(r), s.Now()
	for _, sub := range subs {
		row := alertRow(project, sub)
		ds, err := s.Alerts.Store.Deliveries(ctx, sc, sub.ID)
		if err != nil && !errors.Is(err, alert.ErrNotFound) {
			return v, err
		}
		if len(ds) > 0 {
			last := deliveryRow(ds[0], loc, now)
			row.Last = &last
		}
		v.Rows = append(v.Rows, row)
	}
	if v.CanManage {
		v.Form = alertForm(projectPath(project, "alerts"), v.CSRF, "Create subscription",
			newSpec())
	}
	return v, nil
}

// alertCreate saves a new subscription and answers with its page, which
// shows the signing secret this once.
func (s *server) alertCreate(w http.ResponseWriter, r *http.Request) error {
	sc, err := s.projectScope(r, authz.ManageAlerts)
	if err != nil {
		return err
	}
	if err := s.readForm(w, r); err != nil {
		return err
	}
	spec, err := specFromForm(r)
	var sub alert.Subscription
	var secret string
	if err == nil {
		by := principal(r.Context()).Subject
		sub, secret, err = s.Alerts.Store.Create(r.Context(), sc, spec, by)
		err = alertErr(err)
	}
	var ue *userError
	if errors.As(err, &ue) {
		v, verr := s.alertsView(r, sc)
		if verr != nil {
			return verr
		}
		v.Form = alertForm(projectPath(sc.Project(), "alerts"), v.CSRF, "Create subscription",
			spec)
		v.Form.Error = ue.Msg
		return s.render(w, r, ue.Status, AlertsPage(v))
	}
	if err != nil {
		return err
	}
	v, err := s.alertView(r, sc, sub.ID)
	if err != nil {
		return err
	}
	v.Secret = secret
	return s.render(w, r, http.StatusCreated, AlertPage(v))
}

// alertPage shows one subscription: its rule, its recent deliveries and,
// for managers, the edit form, the test button and delete.
func (s *server) alertPage(w http.ResponseWriter, r *http.Request) error {
	sc, id, err := s.subScope(r, authz.ViewAlerts)
	if err != nil {
		return err
	}
	v, err := s.alertView(r, sc, id)
	if err != nil {
		return err
	}
	return s.render(w, r, http.StatusOK, AlertPage(v))
}

func (s *server) alertView(r *http.Request, sc store.Scope, id string) (AlertView, error) {
	ctx, cancel := context.WithTimeout(r.Context(), s.QueryTimeout)
	defer cancel()
	project := sc.Project()
	sub, err := s.Alerts.Store.Get(ctx, sc, id)
	if err != nil {
		return AlertView{}, alertErr(err)
	}
	ds, err := s.Alerts.Store.Deliveries(ctx, sc, id)
	if err != nil {
		return AlertView{}, alertErr(err)
	}
	loc, now := viewerZone(r), s.Now()
	path := projectPath(project, "alerts", sub.ID)
	v := AlertView{Chrome: s.chrome(r, project), ID: sub.ID, Name: clean(sub.Name, 100),
		ListHref: projectPath(project, "alerts"), Paused: sub.Paused,
		TestAction: path + "/test", DelAction: path + "/delete"}
	v.Section = "alerts"
	row := alertRow(project, sub)
	v.Summary = []KV{
		{Key: "Matches", Value: row.Match},
		{Key: "Fires on", Value: row.Rule},
		{Key: "Sends to", Value: row.Channel},
		{Key: "Id", Value: sub.ID, Mono: true},
		{Key: "Created", Value: timeView(sub.CreatedAt, loc, now).Local + " by " +
			clean(sub.CreatedBy, 80)},
		{Key: "Updated", Value: timeView(sub.UpdatedAt, loc, now).Local},
	}
	for _, d := range ds {
		v.Deliveries = append(v.Deliveries, deliveryRow(d, loc, now))
	}
	if v.CanManage, err = s.canManage(ctx, project); err != nil {
		return v, err
	}
	if v.CanManage {
		v.CanTest = s.Alerts.Sender != nil
		v.Form = alertForm(path, v.CSRF, "Save changes", sub.Spec)
	}
	return v, nil
}

// alertUpdate saves an edited subscription.
func (s *server) alertUpdate(w http.ResponseWriter, r *http.Request) error {
	sc, id, err := s.subScope(r, authz.ManageAlerts)
	if err != nil {
		return err
	}
	if err := s.readForm(w, r); err != nil {
		return err
	}
	spec, err := specFromForm(r)
	if err == nil {
		_, err = s.Alerts.Store.Update(r.Context(), sc, id, spec)
		err = alertErr(err)
	}
	var ue *userError
	if errors.As(err, &ue) {
		v, verr := s.alertView(r, sc, id)
		if verr != nil {
			return verr
		}
		v.Form = alertForm(v.Form.Action, v.CSRF, "Save changes", spec)
		v.Form.Error = ue.Msg
		return s.render(w, r, ue.Status, AlertPage(v))
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, projectPath(sc.Project(), "alerts", id), http.StatusSeeOther)
	return nil
}

// alertDelete removes a subscription and its delivery history.
func (s *server) alertDelete(w http.ResponseWriter, r *http.Request) error {
	sc, id, err := s.subScope(r, authz.ManageAlerts)
	if err != nil {
		return err
	}
	if err := s.readForm(w, r); err != nil {
		return err
	}
	if err := alertErr(s.Alerts.Store.Delete(r.Context(), sc, id)); err != nil {
		return err
	}
	http.Redirect(w, r, projectPath(sc.Project(), "alerts"), http.StatusSeeOther)
	return nil
}

// alertTestSend sends a sample alert and shows the outcome on the page.
func (s *server) alertTestSend(w http.ResponseWriter, r *http.Request) error {
	sc, id, err := s.subScope(r, authz.ManageAlerts)
	if err != nil {
		return err
	}
	if err := s.readForm(w, r); err != nil {
		return err
	}
	d, err := s.testSend(r.Context(), sc, id)
	if err != nil {
		return err
	}
	v, err := s.alertView(r, sc, id)
	if err != nil {
		return err
	}
	v.Notice = testNotice(d)
	return s.render(w, r, http.StatusOK, AlertPage(v))
}

func testNotice(d alert.Delivery) string {
	var b strings.Builder
	if d.Status == alert.StatusDelivered {
		b.WriteString("Test alert delivered")
	} else {
		b.WriteString("Test alert failed: " + clean(d.Error, 120))
	}
	b.WriteString(" after " + pluralize(d.Attempts, "attempt") + ", " + ms(d.LatencyMS) + ".")
	return b.String()
}

func pluralize(n int, word string) string {
	s := count(uint64(max(n, 0))) + " " + word
	if n != 1 {
		s += "s"
	}
	return s
}

// readForm reads a bounded form and checks its CSRF token.
func (s *server) readForm(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxAlertBody)
	if err := r.ParseForm(); err != nil {
		return &userError{Status: http.StatusBadRequest, Msg: "The form could not be read."}
	}
	return s.checkCSRFOf(r, r.PostForm.Get("csrf"))
}
