package testenv

import (
	"fmt"
	"slices"
	"strings"
)

// JSONShape reduces a decoded JSON value (encoding/json's any) to its keys
// and value types, recursively: "string", "number", "bool", "null", maps
// of shapes, and for a list a one-element list whose element merges the
// shapes of all elements (the union of their keys; differing types join
// as "number|string"). An empty list is an empty list. Two servers that
// answer alike have the same shape, whatever their values.
func JSONShape(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = JSONShape(e)
		}
		return m
	case []any:
		if len(x) == 0 {
			return []any{}
		}
		s := JSONShape(x[0])
		for _, e := range x[1:] {
			s = mergeShapes(s, JSONShape(e))
		}
		return []any{s}
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

func mergeShapes(a, b any) any {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		m := make(map[string]any, len(am))
		for k, v := range am {
			m[k] = v
		}
		for k, v := range bm {
			if prev, ok := m[k]; ok {
				m[k] = mergeShapes(prev, v)
			} else {
				m[k] = v
			}
		}
		return m
	}
	al, aok := a.([]any)
	bl, bok := b.([]any)
	if aok && bok {
		switch {
		case len(al) == 0:
			return bl
		case len(bl) == 0:
			return al
		}
		return []any{mergeShapes(al[0], bl[0])}
	}
	as, bs := fmt.Sprint(a), fmt.Sprint(b)
	if as == bs {
		return a
	}
	types := strings.Split(as+"|"+bs, "|")
	slices.Sort(types)
	return strings.Join(slices.Compact(types), "|")
}

// ShapeDiff lists where shape got differs from shape want (both from
// JSONShape), one line per difference, by path: "missing .inserted.image"
// (only want has it), "extra .qdev" (only got has it), or ".size: string,
// want number". An empty list on one side matches any list.
func ShapeDiff(want, got any) []string {
	var out []string
	diffShape("", want, got, &out)
	slices.Sort(out)
	return out
}

func diffShape(path string, want, got any, out *[]string) {
	wm, wok := want.(map[string]any)
	gm, gok := got.(map[string]any)
	if wok && gok {
		for k, w := range wm {
			if g, ok := gm[k]; ok {
				diffShape(path+"."+k, w, g, out)
			} else {
				*out = append(*out, "missing "+path+"."+k)
			}
		}
		for k := range gm {
			if _, ok := wm[k]; !ok {
				*out = append(*out, "extra "+path+"."+k)
			}
		}
		return
	}
	wl, wok := want.([]any)
	gl, gok := got.([]any)
	if wok && gok {
		if len(wl) > 0 && len(gl) > 0 {
			diffShape(path+"[]", wl[0], gl[0], out)
		}
		return
	}
	if ws, gs := fmt.Sprint(want), fmt.Sprint(got); ws != gs {
		*out = append(*out, fmt.Sprintf("%s: %s, want %s", path, gs, ws))
	}
}
