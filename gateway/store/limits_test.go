package store

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLimitsValidate(t *testing.T) {
	tests := []struct {
		name    string
		l       Limits
		wantErr []string // substrings the error must contain; nil = valid
	}{
		{"zero is unlimited", Limits{}, nil},
		{"all set", Limits{RequestsPerMinute: 60, TokensPerMinute: 1e5, ConcurrentRuns: 4, TokenBudget: 1e7,
			BudgetPeriod: "month", Profiles: []string{"fast", "deep"}, Weight: 1000, MaxStreams: 8}, nil},
		{"day", Limits{BudgetPeriod: "day"}, nil},
		{"week", Limits{BudgetPeriod: "week"}, nil},
		{"empty profiles list", Limits{Profiles: []string{}}, nil},
		{"negative rpm", Limits{RequestsPerMinute: -1}, []string{"requests_per_minute", "negative"}},
		{"negative tpm", Limits{TokensPerMinute: -5}, []string{"tokens_per_minute"}},
		{"negative concurrency", Limits{ConcurrentRuns: -1}, []string{"concurrent_runs"}},
		{"negative budget", Limits{TokenBudget: -1}, []string{"token_budget"}},
		{"negative weight", Limits{Weight: -1}, []string{"weight", "negative"}},
		{"negative streams", Limits{MaxStreams: -2}, []string{"max_streams"}},
		{"unknown period", Limits{BudgetPeriod: "year"}, []string{"budget_period", `"year"`}},
		{"period is case sensitive", Limits{BudgetPeriod: "Day"}, []string{"budget_period"}},
		{"weight above max", Limits{Weight: 1001}, []string{"weight", "1001", "maximum"}},
		{"empty profile", Limits{Profiles: []string{"fast", ""}}, []string{"profiles", "entry 1 is empty"}},
		{"duplicate profile", Limits{Profiles: []string{"fast", "deep", "fast"}}, []string{"profiles", `"fast" is listed twice`}},
		{"every problem reported", Limits{RequestsPerMinute: -1, BudgetPeriod: "x", Weight: 5000},
			[]string{"requests_per_minute", "budget_period", "weight"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.l.Validate()
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error mentioning %q", tc.wantErr)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Validate() = %v, does not wrap ErrInvalid", err)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Validate() = %q, want it to mention %q", err, want)
				}
			}
		})
	}
}

func TestLimitsPeriodStart(t *testing.T) {
	d := func(y int, m time.Month, day, h, min int) time.Time {
		return time.Date(y, m, day, h, min, 7, 123, time.UTC)
	}
	midnight := func(y int, m time.Month, day int) time.Time { return time.Date(y, m, day, 0, 0, 0, 0, time.UTC) }
	tests := []struct {
		name   string
		period string
		t      time.Time
		want   time.Time
	}{
		{"never", "", d(2026, 5, 17, 13, 4), time.Time{}},
		{"day", "day", d(2026, 5, 17, 13, 4), midnight(2026, 5, 17)},
		{"day at midnight exactly", "day", midnight(2026, 5, 17), midnight(2026, 5, 17)},
		{"day a nanosecond before midnight", "day", midnight(2026, 5, 18).Add(-1), midnight(2026, 5, 17)},
		{"day of a non-UTC time uses the UTC date", "day",
			time.Date(2026, 5, 18, 1, 0, 0, 0, time.FixedZone("UTC+3", 3*3600)), midnight(2026, 5, 17)},
		{"week on a Monday", "week", d(2026, 5, 11, 9, 0), midnight(2026, 5, 11)},
		{"week on a Wednesday", "week", d(2026, 5, 13, 9, 0), midnight(2026, 5, 11)},
		{"week on a Sunday", "week", d(2026, 5, 17, 23, 59), midnight(2026, 5, 11)},
		{"week across a month", "week", d(2026, 3, 1, 12, 0), midnight(2026, 2, 23)}, // Sunday 1 March
		{"week across a year", "week", d(2027, 1, 2, 0, 1), midnight(2026, 12, 28)},  // Saturday
		{"month", "month", d(2026, 5, 17, 13, 4), midnight(2026, 5, 1)},
		{"month on the 1st", "month", midnight(2026, 6, 1), midnight(2026, 6, 1)},
		{"month on the last nanosecond", "month", midnight(2026, 7, 1).Add(-1), midnight(2026, 6, 1)},
		{"month in a leap February", "month", d(2028, 2, 29, 23, 0), midnight(2028, 2, 1)},
		{"day in a leap February", "day", d(2028, 2, 29, 23, 0), midnight(2028, 2, 29)},
		{"week after a leap day", "week", d(2028, 3, 1, 8, 0), midnight(2028, 2, 28)}, // Wednesday
		{"month in December", "month", d(2026, 12, 31, 23, 59), midnight(2026, 12, 1)},
		{"unknown period", "year", d(2026, 5, 17, 13, 4), time.Time{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Limits{BudgetPeriod: tc.period}.PeriodStart(tc.t)
			if !got.Equal(tc.want) || got.Location() != time.UTC {
				t.Errorf("PeriodStart(%s) = %s, want %s", tc.t, got, tc.want)
			}
			if !tc.want.IsZero() {
				if got.After(tc.t) {
					t.Errorf("start %s is after %s", got, tc.t)
				}
				if tc.period == "week" && got.Weekday() != time.Monday {
					t.Errorf("week starts on %s", got.Weekday())
				}
			}
		})
	}
}

func TestLimitsJSONNames(t *testing.T) {
	l := Limits{RequestsPerMinute: 1, TokensPerMinute: 2, ConcurrentRuns: 3, TokenBudget: 4,
		BudgetPeriod: "day", Profiles: []string{"a"}, Weight: 5, MaxStreams: 6}
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"requests_per_minute":1,"tokens_per_minute":2,"concurrent_runs":3,"token_budget":4,"budget_period":"day","profiles":["a"],"weight":5,"max_streams":6}`
	if string(b) != want {
		t.Errorf("json = %s\nwant   %s", b, want)
	}
	if b, _ := json.Marshal(Limits{}); string(b) != "{}" {
		t.Errorf("zero limits json = %s, want {}", b)
	}
}
