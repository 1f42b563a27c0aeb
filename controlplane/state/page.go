package state

import (
	"encoding/base64"
	"strings"

	"github.com/devfleet/devfleet/controlplane/apierror"
)

// Page sizes for list calls.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

const pageTokenPrefix = "after:"

// Page bounds a list call: at most Size rows whose names sort after After.
type Page struct {
	Size  int
	After string
}

// ParsePage turns a request's page_size and page_token into a Page, or an InvalidArgument
// naming the field.
func ParsePage(size int32, token string) (Page, error) {
	if size < 0 {
		return Page{}, apierror.Invalid("page_size", "must not be negative, got %d", size)
	}
	p := Page{Size: int(size)}
	if p.Size == 0 {
		p.Size = DefaultPageSize
	}
	if p.Size > MaxPageSize {
		p.Size = MaxPageSize
	}
	if token == "" {
		return p, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || !strings.HasPrefix(string(raw), pageTokenPrefix) || len(raw) == len(pageTokenPrefix) {
		return Page{}, apierror.Invalid("page_token", "is not a token this server issued; pass next_page_token from the previous page")
	}
	p.After = string(raw[len(pageTokenPrefix):])
	return p, nil
}

func pageToken(after string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(pageTokenPrefix + after))
}

// named is a row with a primary name.
type named interface{ GetName() string }

// list returns one page of a table, in name order. With index set it walks the rows whose
// index value is arg (memdb orders them by primary key within one value); keep filters further.
func list[T named](v *View, table, index, arg string, p Page, keep func(T) bool) ([]T, string) {
	if p.Size <= 0 {
		p.Size = DefaultPageSize
	}
	var rows []T
	walk := func(raw any) bool {
		row := raw.(T)
		if p.After != "" && row.GetName() <= p.After {
			return true
		}
		if keep != nil && !keep(row) {
			return true
		}
		rows = append(rows, row)
		return len(rows) <= p.Size
	}
	if index == "" {
		it, err := v.txn.LowerBound(table, "id", p.After)
		if err != nil {
			panic("state: lower bound on " + table + ": " + err.Error())
		}
		for raw := it.Next(); raw != nil && walk(raw); raw = it.Next() {
		}
	} else {
		it := v.iter(table, index, arg)
		for raw := it.Next(); raw != nil && walk(raw); raw = it.Next() {
		}
	}
	if len(rows) > p.Size {
		rows = rows[:p.Size]
		return rows, pageToken(rows[len(rows)-1].GetName())
	}
	return rows, ""
}
