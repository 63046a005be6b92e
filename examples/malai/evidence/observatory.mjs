// Runs MDN HTTP Observatory's own scanner against one origin on any
// ports: its scan() takes a host name only, so this does what scan()
// does with the retriever's port options. Usage:
//   node observatory.mjs PACKAGE_DIR HOST HTTPS_PORT HTTP_PORT PATH
// It prints the scan as JSON. NODE_EXTRA_CA_CERTS must name the CA.
const [pkg, host, httpsPort, httpPort, path] = process.argv.slice(2);
const { retrieve } = await import(`${pkg}/src/retriever/retriever.js`);
const { ALL_TESTS, NUM_TESTS, ALGORITHM_VERSION } = await import(`${pkg}/src/constants.js`);
const { MINIMUM_SCORE_FOR_EXTRA_CREDIT } = await import(`${pkg}/src/grader/charts.js`);
const { getGradeForScore, getScoreModifier } = await import(`${pkg}/src/grader/grader.js`);

const opts = { httpsPort: Number(httpsPort), path: path || "/" };
if (httpPort) opts.httpPort = Number(httpPort);
const r = await retrieve(host, opts);
if (!r.responses.auto) {
  console.log(JSON.stringify({ error: "The site seems to be down." }));
  process.exit(1);
}
const results = ALL_TESTS.map((test) => test(r));
let passed = 0, withExtra = 100, uncurved = 100;
const tests = {};
for (const res of results) {
  if (res.result) {
    res.scoreModifier = getScoreModifier(res.result);
    passed += res.pass ? 1 : 0;
    withExtra += res.scoreModifier;
    if (res.scoreModifier < 0) uncurved += res.scoreModifier;
  }
  tests[res.constructor.name] = { result: res.result, pass: res.pass, scoreModifier: res.scoreModifier };
}
const final = getGradeForScore(uncurved >= MINIMUM_SCORE_FOR_EXTRA_CREDIT ? withExtra : uncurved);
console.log(JSON.stringify({
  scan: {
    algorithmVersion: ALGORITHM_VERSION, grade: final.grade, score: final.score,
    statusCode: r.responses.auto.status, testsPassed: passed, testsFailed: NUM_TESTS - passed, testsQuantity: NUM_TESTS,
  },
  tests,
}, null, 2));
