// A person at a browser, for the end-to-end tests of `mayfly login`: headless Chromium
// (driven by playwright-core) opens URL and goes through the provider's development pages.
//
// node login.mjs MODE LOGIN URL [USER_CODE]
//
// MODE `approve` signs in as LOGIN and consents; `deny` signs in and cancels at the
// consent page (the provider redirects with error=access_denied). With USER_CODE, URL is
// the provider's device page: the code is entered and confirmed first. Requests that
// leave the loopback interface are aborted (the pages import web fonts). Ends when the
// browser lands on the loopback redirect or on the provider's success page, and prints
// the final page's text; exits non-zero on anything unexpected.
import { chromium } from 'playwright-core';

const [mode, login, url, userCode] = process.argv.slice(2);
if (!['approve', 'deny'].includes(mode) || !login || !url) {
  console.error('usage: node login.mjs approve|deny LOGIN URL [USER_CODE]');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--disable-sync'],
});
let failed = false;
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  await page.route('**/*', (route) => {
    const host = new URL(route.request().url()).hostname;
    return host === '127.0.0.1' || host === 'localhost' ? route.continue() : route.abort();
  });
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  for (let step = 0; step < 10; step += 1) {
    await page.waitForLoadState('domcontentloaded');
    const here = new URL(page.url());
    const text = await page.locator('body').innerText().catch(() => '');
    if (here.pathname === '/callback' || text.includes('Sign-in Success')) {
      console.log(`landed on ${here.origin}${here.pathname}: ${text.trim()}`);
      break;
    }
    if (await page.locator('button[form="op.deviceConfirmForm"]').count()) {
      await Promise.all([page.waitForNavigation(), page.click('button[form="op.deviceConfirmForm"]:not([name="abort"])')]);
    } else if (await page.locator('input[name="user_code"]').count()) {
      await page.fill('input[name="user_code"]', userCode ?? '');
      await Promise.all([page.waitForNavigation(), page.click('button[form="op.deviceInputForm"]')]);
    } else if (await page.locator('input[name="login"]').count()) {
      await page.fill('input[name="login"]', login);
      await page.fill('input[name="password"]', 'any');
      await Promise.all([page.waitForNavigation(), page.click('button.login-submit')]);
    } else if (await page.locator('input[name="prompt"][value="consent"]').count()) {
      const button = mode === 'deny' ? '.login-help a' : 'button.login-submit';
      await Promise.all([page.waitForNavigation(), page.click(button)]);
    } else {
      throw new Error(`unexpected page at ${here.origin}${here.pathname}: ${text.slice(0, 300)}`);
    }
  }
} catch (error) {
  console.error(`login.mjs: ${error.message}`);
  failed = true;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
