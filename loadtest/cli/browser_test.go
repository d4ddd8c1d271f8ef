package cli

import (
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chromium finds a Chromium for the browser test: $INFERGW_CHROMIUM, else chromium on PATH.
// Without one the test is skipped, unless INFERGW_REQUIRE_BROWSER is set (CI sets it and
// installs Debian's chromium), so that CI cannot pass it vacuously.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("INFERGW_CHROMIUM"); p != "" {
		return p
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("INFERGW_REQUIRE_BROWSER") != "" {
			t.Fatal("INFERGW_REQUIRE_BROWSER is set but no chromium was found")
		}
		t.Skip("no chromium (apt-get install chromium); set INFERGW_CHROMIUM to point at one")
	}
	return p
}

// TestReportInHeadlessBrowser renders a real run's HTML report (a saturating sweep, so
// every chart is drawn) in headless Chromium: the DOM the browser builds holds every
// chart and its curves, and the screenshot has drawn content in the chart area.
func TestReportInHeadlessBrowser(t *testing.T) {
	bin := chromium(t)
	url := delayServer(t, 200*time.Millisecond)
	dir := t.TempDir()
	report := filepath.Join(dir, "r.html")
	if _, err := execute(t, "--url", url, "--model", "m", "--sweep", "5,40", "--duration", "1s", "--max-inflight", "4", "-q", "--report", report); err != nil {
		t.Fatal(err)
	}
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + filepath.Join(dir, "profile")}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dom, err := exec.CommandContext(ctx, bin, append(args, "--dump-dom", "file://"+report)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	d := string(dom)
	for what, want := range map[string]int{"<svg": 6, `class="cdf"`: 2 /* ttft, e2e: one token per response, so no tpot or itl */, `class="sweep"`: 4, `class="knee"`: 2} {
		if n := strings.Count(d, what); n != want {
			t.Errorf("the browser's DOM has %d × %s, want %d", n, what, want)
		}
	}
	if strings.Count(d, `class="bar"`) == 0 {
		t.Error("the browser's DOM has no histogram bar")
	}
	shot := filepath.Join(dir, "shot.png")
	if out, err := exec.CommandContext(ctx, bin, append(args, "--window-size=1200,2400", "--screenshot="+shot, "file://"+report)...).CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, out)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	// The first chart (the sweep's latencies) sits in the upper part of the page: count
	// pixels that are neither white nor near-white there.
	if ink := inkPixels(img, image.Rect(0, 0, 1100, 900)); ink < 2000 {
		t.Errorf("only %d drawn pixels in the upper page: the charts were not rendered", ink)
	}
}

func inkPixels(img image.Image, r image.Rectangle) int {
	r = r.Intersect(img.Bounds())
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y += 2 {
		for x := r.Min.X; x < r.Max.X; x += 2 {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			if cr < 0xd000 || cg < 0xd000 || cb < 0xd000 {
				n++
			}
		}
	}
	return n
}
