package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// TraceSummary is what CheckTrace found in a trace.
type TraceSummary struct {
	// Tracks maps each track's name (thread_name) to its slice count; a
	// named track without slices is there with 0.
	Tracks map[string]int
	// Names counts the slices of each name, all tracks.
	Names map[string]int
	Flows int // flow arrows (start and finish pairs)
}

// traceEvent is one event of a trace-event JSON file; times are kept as
// the numbers written, to be read exactly.
type traceEvent struct {
	Ph   *string         `json:"ph"`
	Name *string         `json:"name"`
	Cat  string          `json:"cat"`
	Pid  *int            `json:"pid"`
	Tid  *int            `json:"tid"`
	Ts   *json.Number    `json:"ts"`
	Dur  *json.Number    `json:"dur"`
	ID   *json.Number    `json:"id"`
	BP   string          `json:"bp"`
	Args json.RawMessage `json:"args"`
}

type traceSlice struct{ start, end int64 }

type traceFlow struct {
	key     string // cat, name and id
	tid     int
	at      int64
	started bool
}

// CheckTrace checks b against the Chrome trace-event format
// (https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU)
// as exittrace writes it: an object with a traceEvents array; every
// event has ph, name, pid and tid; complete events ("X") a ts and a
// non-negative dur, in time order on their track; metadata ("M") names
// every track that has slices; slices on a "vCPU N" track never overlap;
// every flow start ("s") has one finish ("f") of the same cat, name and
// id, not before it, and each end lies inside a slice of its track.
// Times must be microseconds with at most three decimals.
func CheckTrace(b []byte) (TraceSummary, error) {
	var doc struct {
		TraceEvents []traceEvent `json:"traceEvents"`
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&doc); err != nil {
		return TraceSummary{}, fmt.Errorf("not trace-event JSON: %w", err)
	}
	if doc.TraceEvents == nil {
		return TraceSummary{}, fmt.Errorf("no traceEvents array")
	}
	sum := TraceSummary{Tracks: map[string]int{}, Names: map[string]int{}}
	trackName := map[int]string{}
	slices := map[int][]traceSlice{}
	var flows []traceFlow
	for i, ev := range doc.TraceEvents {
		if ev.Ph == nil || ev.Name == nil || ev.Pid == nil || ev.Tid == nil {
			return sum, fmt.Errorf("event %d: ph, name, pid and tid are required", i)
		}
		tid := *ev.Tid
		switch *ev.Ph {
		case "M":
			var args struct {
				Name *string `json:"name"`
			}
			if *ev.Name == "thread_name" || *ev.Name == "process_name" {
				if json.Unmarshal(ev.Args, &args) != nil || args.Name == nil || *args.Name == "" {
					return sum, fmt.Errorf("event %d: %s without args.name", i, *ev.Name)
				}
			}
			if *ev.Name == "thread_name" {
				trackName[tid] = *args.Name
			}
		case "X":
			if ev.Ts == nil || ev.Dur == nil {
				return sum, fmt.Errorf("event %d (X): ts and dur are required", i)
			}
			ts, err1 := traceNanos(*ev.Ts)
			dur, err2 := traceNanos(*ev.Dur)
			if err1 != nil || err2 != nil || dur < 0 {
				return sum, fmt.Errorf("event %d (X): bad ts %q or dur %q", i, *ev.Ts, *ev.Dur)
			}
			s := slices[tid]
			if n := len(s); n > 0 && ts < s[n-1].start {
				return sum, fmt.Errorf("event %d (X) on track %d: ts %s before the previous slice's", i, tid, *ev.Ts)
			}
			slices[tid] = append(s, traceSlice{ts, ts + dur})
			sum.Names[*ev.Name]++
		case "s", "f":
			if ev.Ts == nil || ev.ID == nil {
				return sum, fmt.Errorf("event %d (%s): ts and id are required", i, *ev.Ph)
			}
			ts, err := traceNanos(*ev.Ts)
			if err != nil {
				return sum, fmt.Errorf("event %d (%s): bad ts %q", i, *ev.Ph, *ev.Ts)
			}
			if *ev.Ph == "f" && ev.BP != "e" {
				return sum, fmt.Errorf("event %d (f): want bp \"e\" (bound to the enclosing slice)", i)
			}
			flows = append(flows, traceFlow{key: ev.Cat + "/" + *ev.Name + "/" + ev.ID.String(), tid: tid, at: ts, started: *ev.Ph == "s"})
		default:
			return sum, fmt.Errorf("event %d: phase %q is not one this check knows", i, *ev.Ph)
		}
	}
	for tid, s := range slices {
		name, ok := trackName[tid]
		if !ok {
			return sum, fmt.Errorf("track %d has slices but no thread_name", tid)
		}
		if _, dup := sum.Tracks[name]; dup {
			return sum, fmt.Errorf("two tracks are named %q", name)
		}
		sum.Tracks[name] = len(s)
		if strings.HasPrefix(name, "vCPU ") {
			for j := 1; j < len(s); j++ {
				if s[j].start < s[j-1].end {
					return sum, fmt.Errorf("%s: slice at %d ns starts before the one at %d ns ends (%d ns)", name, s[j].start, s[j-1].start, s[j-1].end)
				}
			}
		}
	}
	for tid, name := range trackName {
		if _, ok := slices[tid]; !ok {
			if _, dup := sum.Tracks[name]; dup {
				return sum, fmt.Errorf("two tracks are named %q", name)
			}
			sum.Tracks[name] = 0
		}
	}
	if err := checkFlows(flows, slices); err != nil {
		return sum, err
	}
	sum.Flows = len(flows) / 2
	return sum, nil
}

// checkFlows pairs starts with finishes and finds each end's slice.
func checkFlows(flows []traceFlow, slices map[int][]traceSlice) error {
	byKey := map[string][]traceFlow{}
	for _, f := range flows {
		if !inSlice(slices[f.tid], f.at) {
			return fmt.Errorf("flow %s: end at %d ns on track %d lies in no slice", f.key, f.at, f.tid)
		}
		byKey[f.key] = append(byKey[f.key], f)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fs := byKey[k]
		if len(fs) != 2 || fs[0].started == fs[1].started {
			return fmt.Errorf("flow %s: want one start and one finish, have %d events", k, len(fs))
		}
		start, finish := fs[0], fs[1]
		if !start.started {
			start, finish = finish, start
		}
		if finish.at < start.at {
			return fmt.Errorf("flow %s finishes (%d ns) before it starts (%d ns)", k, finish.at, start.at)
		}
	}
	return nil
}

func inSlice(s []traceSlice, at int64) bool {
	i := sort.Search(len(s), func(i int) bool { return s[i].start > at })
	// Slices on a device track may overlap: any that started before may
	// still hold at.
	for j := i - 1; j >= 0; j-- {
		if s[j].end >= at {
			return true
		}
	}
	return false
}

// traceNanos reads microseconds with up to three decimals exactly.
func traceNanos(n json.Number) (int64, error) {
	s := n.String()
	whole, frac, _ := strings.Cut(s, ".")
	if len(frac) > 3 {
		return 0, fmt.Errorf("%s: finer than a nanosecond", s)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, err
	}
	f := int64(0)
	if frac != "" {
		if f, err = strconv.ParseInt(frac+strings.Repeat("0", 3-len(frac)), 10, 64); err != nil || f < 0 {
			return 0, fmt.Errorf("%s: bad decimals", s)
		}
	}
	if strings.HasPrefix(whole, "-") {
		f = -f
	}
	return w*1000 + f, nil
}
