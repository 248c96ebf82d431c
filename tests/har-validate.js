#!/usr/bin/env node
// Validates a HAR file against the HAR 1.2 schema with Debian's
// node-har-validator:
//   NODE_PATH=/usr/share/nodejs node tests/har-validate.js FILE
// Exits 0 when valid, 1 with the schema errors printed, 2 on usage or
// read errors. Also checks what the schema cannot: entries sorted by
// startedDateTime, and time equal to the sum of the timings that are not -1.
'use strict';
const fs = require('fs');
const validator = require('har-validator');

if (process.argv.length !== 3) {
  console.error('usage: har-validate.js FILE');
  process.exit(2);
}
const file = process.argv[2];
let har;
try {
  har = JSON.parse(fs.readFileSync(file, 'utf8'));
} catch (e) {
  console.error(`${file}: ${e.message}`);
  process.exit(2);
}

function extraChecks(log) {
  const problems = [];
  let last = -Infinity;
  log.entries.forEach((e, i) => {
    const t = Date.parse(e.startedDateTime);
    if (t < last) problems.push(`entries[${i}]: startedDateTime before the previous entry's`);
    last = t;
    const parts = ['blocked', 'dns', 'connect', 'send', 'wait', 'receive']
      .map((k) => e.timings[k]).filter((v) => v !== undefined && v !== -1);
    if (parts.some((v) => v < 0)) problems.push(`entries[${i}]: a negative timing other than -1`);
    const sum = parts.reduce((a, b) => a + b, 0);
    // ms with µs decimals: equal up to floating-point rounding.
    if (Math.abs(sum - e.time) > 1e-6) problems.push(`entries[${i}]: time ${e.time} != timings sum ${sum}`);
  });
  return problems;
}

validator.har(har).then(() => {
  const problems = extraChecks(har.log);
  if (problems.length) {
    problems.forEach((p) => console.error(`${file}: ${p}`));
    process.exit(1);
  }
  console.log(`${file}: valid HAR ${har.log.version}, ${har.log.entries.length} entries`);
}, (err) => {
  console.error(`${file}: invalid HAR`);
  for (const e of err.errors || [err]) {
    console.error(`  ${e.dataPath || e.instancePath || ''} ${e.message}${e.params ? ' ' + JSON.stringify(e.params) : ''}`);
  }
  process.exit(1);
});
