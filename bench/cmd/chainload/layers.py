import sys, re, collections
# layer rules: first matching frame from the leaf up decides
rules = [
 ('WAF (Coraza + CRS)', ['corazawaf/coraza', '/gateway/internal/waf.', 'aho-corasick', 'regexp.', 'wasilibs', 'coraza-coreruleset']),
 ('JWT verification (both layers)', ['malai/jwtverify', 'golang-jwt', 'keyfunc']),
 ('RBAC (Casbin)', ['malai/rbac', 'casbin']),
 ('idempotency', ['malai/idempotency']),
 ('rate limits', ['malai/ratelimit', 'ulule/limiter']),
 ('audit append', ['malai/auditlog', 'keyring']),
 ('ledger handlers', ['examples/malai/ledger', 'strictjson', 'malai/bench/load.(*book)']),
 ('security headers', ['malai/headers', 'unrolled/secure']),
 ('correlation: id, log, metrics, traces', ['malai/correlation', 'log/slog', 'go.opentelemetry.io', 'otelhttp', 'go-chi/chi', 'internal/platform.']),
 ('gateway proxy hop (client side)', ['httputil.', 'net/http.(*Transport)', 'net/http.(*persistConn)', 'net/http.(*Client)']),
 ('identity / worker (idle background)', ['examples/malai/identity', 'examples/malai/worker']),
 ('TLS (handshakes, record encryption)', ['crypto/tls', 'crypto/internal/fips140/aes', 'crypto/aes', 'gcm']),
 ('HTTP server (parse, write)', ['net/http.', 'net/textproto', 'bufio.']),
 ('GC and scheduler', ['runtime.gcBgMarkWorker', 'runtime.bgsweep', 'runtime.bgscavenge', 'runtime.mcall', 'runtime.schedule', 'runtime.findRunnable', 'runtime.morestack', 'runtime.gcStart', 'runtime.sysmon']),
]
counts = collections.Counter(); total = 0
frames = []
def flush():
    global total, frames
    if not frames: return
    total += 1
    layer = 'other (syscalls, network stack, runtime)'
    for f in frames:
        hit = None
        for name, pats in rules:
            if any(p in f for p in pats):
                hit = name; break
        if hit:
            layer = hit; break
    counts[layer] += 1
    frames = []
for line in open(sys.argv[1], errors='replace'):
    if not line.strip():
        flush(); continue
    if line.startswith('\t') or line.startswith(' '):
        parts = line.strip().split(' ', 1)
        if len(parts) == 2: frames.append(parts[1])
    else:
        flush()
flush()
cpu = float(sys.argv[2]) if len(sys.argv) > 2 else 0
print(f"samples {total}")
for name, c in counts.most_common():
    print(f"| {name} | {100*c/total:.1f} % | {cpu*c/total:.0f} |")
