package exitstats

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// TopRIPs is how many guest RIPs each row of each vCPU keeps: the K of
// its top-K.
const TopRIPs = 16

// ripCounter finds the guest RIPs that cause most of one row's exits, in
// fixed memory and a bounded number of steps per exit, with the
// space-saving algorithm (Metwally, Agrawal and El Abbadi, 2005): a RIP
// already in a slot counts up; a new one takes over the slot counted
// least and inherits its count plus one.
//
// So the counts are upper bounds, not exact: a slot's count may exceed
// the true count of its RIP by at most over, the count it inherited. What
// the algorithm guarantees over a stream of N exits: every RIP seen more
// than N/TopRIPs times holds a slot; the least count is at most
// N/TopRIPs; and a RIP that took an empty slot (over 0) is counted
// exactly.
//
// Its fields are words like a counter's: written only by the vCPU thread
// inside VCPU.seq's write section.
type ripCounter struct {
	rip   [TopRIPs]word
	count [TopRIPs]word // 0: the slot was never used
	over  [TopRIPs]word
}

// add counts one exit at rip. It must be called by the single writer
// inside a write section. Used slots fill from the front, so a RIP is
// found before any empty slot; an empty slot matched by RIP 0 simply
// starts counting it, exactly.
func (c *ripCounter) add(rip uint64) {
	for i := range c.rip {
		if c.rip[i].load() == rip {
			c.count[i].store(c.count[i].load() + 1)
			return
		}
	}
	least, n := 0, c.count[0].load()
	for i := 1; i < TopRIPs && n != 0; i++ {
		if m := c.count[i].load(); m < n {
			least, n = i, m
		}
	}
	c.rip[least].store(rip)
	c.over[least].store(n)
	c.count[least].store(n + 1)
}

// ripSlots is a reader's copy of a ripCounter.
type ripSlots [TopRIPs]RIPCount

// load copies the used slots into s; the caller provides the consistency.
// Slots fill from the front and stay used, so the copy stops at the first
// empty one: a short read is less likely to be overrun by the writer. What
// an earlier, torn reading left in s past that point has a count of 0.
func (c *ripCounter) load(s *ripSlots) {
	for i := range c.rip {
		n := c.count[i].load()
		s[i] = RIPCount{RIP: c.rip[i].load(), Count: n, Overcount: c.over[i].load()}
		if n == 0 {
			return
		}
	}
}

// list returns the used slots, most counted first.
func (s *ripSlots) list() []RIPCount {
	var out []RIPCount
	for _, r := range s {
		if r.Count != 0 {
			out = append(out, r)
		}
	}
	sortRIPs(out)
	return out
}

// RIPCount is one guest RIP of a row: the address of the instruction that
// caused the exits (for an OUT that KVM emulated, the address just after
// it: see the vcpu package) and how many exits it caused.
type RIPCount struct {
	RIP uint64
	// Symbol names RIP as function+0xoff; empty where no symbol table
	// has it (Snapshot.Symbolize).
	Symbol string
	// Count is an upper bound on the exits at RIP; Count - Overcount is
	// a lower bound. Overcount is 0 where Count is exact.
	Count     uint64
	Overcount uint64
}

// Exact reports whether Count is the exact number of exits at RIP.
func (r RIPCount) Exact() bool { return r.Overcount == 0 }

// Where names the RIP as function+0xoff, or as a bare address where no
// symbol is known.
func (r RIPCount) Where() string {
	if r.Symbol != "" {
		return r.Symbol
	}
	return fmt.Sprintf("%#x", r.RIP)
}

// ripJSON writes the RIP as a hexadecimal string: kernel addresses are
// beyond what a float64 (a JavaScript or jq number) holds exactly, and
// hex is how System.map and backtraces spell them.
type ripJSON struct {
	RIP       string `json:"rip"`
	Symbol    string `json:"symbol,omitempty"`
	Count     uint64 `json:"count"`
	Overcount uint64 `json:"overcount"`
}

// MarshalJSON writes {"rip": "0x...", "symbol", "count", "overcount"}.
func (r RIPCount) MarshalJSON() ([]byte, error) {
	return json.Marshal(ripJSON{RIP: fmt.Sprintf("%#x", r.RIP), Symbol: r.Symbol, Count: r.Count, Overcount: r.Overcount})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *RIPCount) UnmarshalJSON(b []byte) error {
	var j ripJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	hex, ok := strings.CutPrefix(j.RIP, "0x")
	if !ok {
		return fmt.Errorf("rip %q: want 0x and hexadecimal digits", j.RIP)
	}
	rip, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		return fmt.Errorf("rip %q: want 0x and at most 16 hexadecimal digits", j.RIP)
	}
	if j.Overcount > j.Count {
		return fmt.Errorf("rip %s: overcount %d above count %d", j.RIP, j.Overcount, j.Count)
	}
	*r = RIPCount{RIP: rip, Symbol: j.Symbol, Count: j.Count, Overcount: j.Overcount}
	return nil
}

// sortRIPs orders by count descending, then by address.
func sortRIPs(rs []RIPCount) {
	slices.SortFunc(rs, func(a, b RIPCount) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.RIP, b.RIP)
	})
}

// mergeRIPs merges the top RIPs of one row from several vCPUs and keeps
// the TopRIPs most counted. Counts stay upper bounds: a RIP missing from
// the list of a vCPU that evicted RIPs may still have run there as often
// as that list's least count, so that much is added to its count and
// overcount. (A list that never evicted, all overcounts 0, holds every
// RIP its vCPU saw.)
func mergeRIPs(lists [][]RIPCount) []RIPCount {
	type merged struct {
		RIPCount
		covered uint64 // the least counts of the evicting lists that hold it
	}
	var all []*merged
	byRIP := map[uint64]*merged{}
	var slack uint64 // the least counts of all evicting lists
	for _, l := range lists {
		if len(l) == 0 {
			continue
		}
		evicted, least := false, l[0].Count
		for _, r := range l {
			evicted = evicted || r.Overcount > 0
			least = min(least, r.Count)
		}
		if !evicted {
			least = 0
		}
		slack = addSat(slack, least)
		for _, r := range l {
			m, ok := byRIP[r.RIP]
			if !ok {
				m = &merged{RIPCount: RIPCount{RIP: r.RIP, Symbol: r.Symbol}}
				byRIP[r.RIP] = m
				all = append(all, m)
			}
			m.Count = addSat(m.Count, r.Count)
			m.Overcount = addSat(m.Overcount, r.Overcount)
			m.covered = addSat(m.covered, least)
			if m.Symbol == "" {
				m.Symbol = r.Symbol
			}
		}
	}
	out := make([]RIPCount, 0, len(all))
	for _, m := range all {
		missing := slack - m.covered
		if slack == math.MaxUint64 {
			missing = slack
		}
		m.Count = addSat(m.Count, missing)
		m.Overcount = addSat(m.Overcount, missing)
		out = append(out, m.RIPCount)
	}
	sortRIPs(out)
	return out[:min(len(out), TopRIPs)]
}
