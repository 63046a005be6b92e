package breach

import "testing"

func TestContains(t *testing.T) {
	c := Default()
	if c.Size() != 30000 {
		t.Fatalf("corpus size %d, want 30000 (zxcvbn passwords list)", c.Size())
	}
	tests := []struct {
		pw   string
		want bool
	}{
		{"password", true},
		{"PASSWORD", true},
		{"Password123!", true},
		{"!!Dragon2024", true},
		{"P@ssw0rd!!", true},
		{"Tr0ub4dor&3", false},
		{"qwertyuiop", true},
		{"Monkey-1234567", true},
		{"correct horse battery staple", false},
		{"Tr1cky-Harbour-Lantern", false},
		{"x7#Kq9!vLm2$", false},
		{"abc!!!!!!!!!", false}, // core shorter than minCore
		{"", false},
	}
	for _, tt := range tests {
		if got := c.Contains(tt.pw); got != tt.want {
			t.Errorf("Contains(%q) = %v, want %v", tt.pw, got, tt.want)
		}
	}
}

func TestNewCustom(t *testing.T) {
	c := New([]string{"Hunter2Hunter2"})
	if !c.Contains("hunter2hunter2") || c.Contains("hunter3hunter3") {
		t.Fatal("custom corpus lookup wrong")
	}
}

func BenchmarkContains(b *testing.B) {
	c := Default()
	b.ReportAllocs()
	for b.Loop() {
		c.Contains("Tr1cky-Harbour-Lantern")
	}
}
