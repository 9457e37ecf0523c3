package web

import (
	"context"
	"errors"
	"net/http"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/filter"
)

// ProjectCard is one project on the projects page.
type ProjectCard struct {
	ID, Href, TracesHref string
	Decisions, Blocked   string
	Flagged              string // alerted or monitored
}

// ProjectsView is the projects page.
type ProjectsView struct {
	Chrome
	Presets    []PresetLink
	RangeLabel string
	Projects   []ProjectCard
}

func (s *server) projects(w http.ResponseWriter, r *http.Request) error {
	f, _, err := s.parseFilter(r)
	if err != nil {
		return err
	}
	rangeOnly := filter.Filter{Preset: f.Preset, From: f.From, To: f.To}
	v := ProjectsView{Chrome: s.chrome(r, ""), RangeLabel: "Last " + f.Preset}
	if f.Preset == "" {
		v.RangeLabel = f.From.Format("Jan 02 15:04") + " – " + f.To.Format("Jan 02 15:04 UTC")
	}
	for _, p := range filter.Presets {
		v.Presets = append(v.Presets, PresetLink{Name: p.Name, Href: "/?range=" + p.Name,
			Active: f.Preset == p.Name})
	}

	ctx, cancel := context.WithTimeout(r.Context(), s.QueryTimeout)
	defer cancel()
	for _, project := range s.Authz.Projects(principal(ctx)) {
		sc, err := s.authorize(ctx, authz.ListTraces, authz.KindProject, project, "")
		if err != nil {
			if errors.Is(err, errNotFound) {
				continue
			}
			return err
		}
		facets, err := s.Store.Facets(ctx, sc, rangeOnly)
		if err != nil {
			return err
		}
		var total, blocked, flagged uint64
		for _, o := range facets["outcome"] {
			total += o.Count
			switch o.Value {
			case "blocked":
				blocked += o.Count
			case "alerted", "monitored":
				flagged += o.Count
			}
		}
		q := rangeOnly.Values()
		v.Projects = append(v.Projects, ProjectCard{ID: project,
			Href:       href(projectPath(project), q),
			TracesHref: href(projectPath(project, "traces"), q),
			Decisions:  count(total), Blocked: count(blocked), Flagged: count(flagged)})
	}
	return s.render(w, r, http.StatusOK, ProjectsPage(v))
}
