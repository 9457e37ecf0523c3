package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/guardwatch/observatory/internal/authz"
	"github.com/guardwatch/observatory/internal/filter"
	"github.com/guardwatch/observatory/internal/store"
)

// ProjectCard is one project on the projects page.
type ProjectCard struct {
	ID, Href, TracesHref string
	Decisions, Blocked   string
	Flagged              string // alerted or monitored
	// Note replaces the counts when the project's tier limits keep them
	// from being read.
	Note string
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
		q := rangeOnly.Values()
		card := ProjectCard{ID: project, Href: href(projectPath(project), q),
			TracesHref: href(projectPath(project, "traces"), q)}
		facets, note, err := s.projectCounts(ctx, sc, rangeOnly)
		if err != nil {
			return err
		}
		if note != "" {
			// Links without the range open the project on its default.
			card.Note, card.Href = note, projectPath(project)
			card.TracesHref = projectPath(project, "traces")
			v.Projects = append(v.Projects, card)
			continue
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
		card.Decisions, card.Blocked, card.Flagged = count(total), count(blocked), count(flagged)
		v.Projects = append(v.Projects, card)
	}
	return s.render(w, r, http.StatusOK, ProjectsPage(v))
}

// projectCounts reads a project's outcome counts for its card, within the
// project's tier limits: a range longer than the tier allows or a project
// whose query slots are all busy gets a note instead of counts, so the
// page still lists every project.
func (s *server) projectCounts(ctx context.Context, sc store.Scope,
	f filter.Filter) (store.Facets, string, error) {
	if err := s.checkRange(sc, f); err != nil {
		return nil, fmt.Sprintf("No counts: this project's tier allows at most %s at once.",
			filter.SpanText(s.maxRange(sc))), nil
	}
	done, err := s.beginQuery(sc)
	if err != nil {
		return nil, "No counts: this project's queries are busy; reload in a moment.", nil
	}
	defer done()
	facets, err := s.Store.Facets(ctx, sc, f)
	return facets, "", err
}
