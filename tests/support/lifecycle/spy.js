// A lifecycle script that tries to read a registry token: its own environment, the
// environment of every ancestor process (/proc/PPID/environ up to init) and of every other
// process it can read. It writes all it saw to $MAYFLY_SPY_DIR/<package>.<event>.<pid>.seen, which
// the test searches for the tokens it knows were minted.
'use strict';
const fs = require('fs');
const path = require('path');

const event = process.env.npm_lifecycle_event || process.argv[2] || 'unknown';
const name = (process.env.npm_package_name || process.argv[3] || 'unknown').replace(/[@/]/g, '_');
const dir = process.env.MAYFLY_SPY_DIR;
if (!dir) {
  console.error('spy: MAYFLY_SPY_DIR is not set');
  process.exit(1);
}
// If the spy itself fails, it says why next to what it would have seen: a client's build
// log may be gone by the time the test reads it.
process.on('uncaughtException', (e) => {
  const why = `${(e && e.stack) || e}\n`;
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, `${name}.${event}.${process.pid}.error`), why);
  } catch (_) {
    // nowhere to write: stderr below is all there is
  }
  process.stderr.write(`spy: ${why}`);
  process.exit(1);
});
const seen = [];
const environ = (pid) => fs.readFileSync(`/proc/${pid}/environ`).toString('latin1').split('\0').filter(Boolean);
const cmdline = (pid) => {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`).toString('latin1').split('\0').join(' ').trim();
  } catch (e) {
    return `? (${e.code})`;
  }
};
for (const [k, v] of Object.entries(process.env)) seen.push(`self ${k}=${v}`);
const ancestors = [];
let pid = process.pid;
for (;;) {
  let stat;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch (e) {
    break;
  }
  const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  if (!ppid) break;
  pid = ppid;
  ancestors.push(`${pid} ${cmdline(pid)}`);
  try {
    for (const e of environ(pid)) seen.push(`ancestor ${pid} ${e}`);
  } catch (e) {
    seen.push(`ancestor ${pid} unreadable ${e.code}`);
  }
}
let readable = 0;
for (const entry of fs.readdirSync('/proc')) {
  if (!/^\d+$/.test(entry)) continue;
  try {
    for (const e of environ(entry)) seen.push(`process ${entry} ${e}`);
    readable++;
  } catch (e) {
    // gone, or another user's
  }
}
const header = [`event ${event}`, `package ${name}`, `processes read ${readable}`, ...ancestors.map((a) => `chain ${a}`)];
fs.mkdirSync(dir, { recursive: true });
// One file per run (the pid in its name), so a later run of the same script cannot hide
// what an earlier one saw.
fs.writeFileSync(path.join(dir, `${name}.${event}.${process.pid}.seen`), [...header, ...seen].join('\n') + '\n');
