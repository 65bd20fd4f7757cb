// An approver at a browser, for the end-to-end tests of the approval page: headless
// Chromium driven by playwright-core opens an approval link, signs in at the OpenID
// provider's development pages, and approves or denies.
//
// node browser.mjs URL LOGIN approve|deny|view [REASON]
//
// Prints one JSON line: `page` is the exchange's page after sign-in (`status`, `html`),
// `result` the page the decision led to (absent for `view`, or when the page offered
// no decision).
import { chromium } from 'playwright-core';

const [url, login, action, reason] = process.argv.slice(2);
if (!url || !login || !['approve', 'deny', 'view'].includes(action)) {
  console.error('usage: node browser.mjs URL LOGIN approve|deny|view [REASON]');
  process.exit(2);
}
const exchange = new URL(url).origin;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
try {
  // The exchange serves HTTPS with a certificate of a CA made for this one test run,
  // which Chromium has no per-context way to trust; nothing but loopback is reachable.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  // The provider's pages import web fonts: only loopback is let through.
  await context.route('**/*', (route) => {
    const host = new URL(route.request().url()).hostname;
    return host === '127.0.0.1' || host === 'localhost' ? route.continue() : route.abort();
  });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const navigate = async (click) => {
    const [response] = await Promise.all([page.waitForNavigation({ waitUntil: 'domcontentloaded' }), click()]);
    return response;
  };
  let response = await page.goto(url, { waitUntil: 'domcontentloaded' });
  for (let step = 0; new URL(page.url()).origin !== exchange; step++) {
    if (step >= 6) throw new Error(`stuck at ${page.url()}: ${await page.content()}`);
    if (await page.locator('input[name="login"]').count()) {
      await page.fill('input[name="login"]', login);
      await page.fill('input[name="password"]', 'any');
    }
    // The sign-in and the consent pages both submit with this button.
    response = await navigate(() => page.click('button.login-submit'));
  }
  const shown = async (response) => ({ status: response ? response.status() : 0, html: await page.content() });
  const out = { page: await shown(response) };
  if (action !== 'view' && (await page.locator('#approve').count())) {
    if (action === 'approve') {
      out.result = await shown(await navigate(() => page.click('#approve')));
    } else {
      await page.fill('#reason', reason || '');
      out.result = await shown(await navigate(() => page.click('#deny')));
    }
  }
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
