"""Drive the web console of a running broker in headless Chromium.

server/tests/console.rs starts the broker, creates a topic, produces and
commits offsets for consumer groups, then runs this script with the
expected numbers. It speaks WebDriver over plain HTTP to chromedriver
(standard library only), and checks each page of the console:

- cluster: this broker is listed, live, with the controller;
- topics: the topic with every partition, its leader, ISR, end offsets and
  configs;
- groups: each group with its state, members and per-partition lag; a group
  id holding HTML is shown as text, not markup;
- charts: both canvases are drawn from several samples, and the produce
  and fetch throughput and latency of the traffic running meanwhile show;
- the browser's log holds no error (SEVERE) at the end.

Screenshots of each page and the browser's log are written to the artifacts
directory. Exits non-zero with a clear message on the first failure.
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

WAIT_S = 20


class Failed(Exception):
    pass


def step(message):
    print(f"-- {message}", flush=True)


def check(condition, message):
    if not condition:
        raise Failed(message)


class WebDriver:
    """The few WebDriver commands the test needs, over HTTP."""

    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        self.session = None

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"{}").get("value")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise Failed(f"WebDriver {method} {path}: {error.code} {detail[:2000]}")

    def wait_ready(self, process):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise Failed(f"chromedriver exited with {process.returncode}")
            try:
                if self.request("GET", "/status").get("ready"):
                    return
            except (OSError, Failed):
                pass
            time.sleep(0.1)
        raise Failed("chromedriver did not become ready")

    def start(self, chromium, width, height):
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-extensions",
                    "--no-first-run",
                    f"--window-size={width},{height}",
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }
        value = self.request("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
        self.session = value["sessionId"]

    def command(self, method, path, body=None):
        return self.request(method, f"/session/{self.session}{path}", body)

    def open(self, url):
        self.command("POST", "/url", {"url": url})

    def script(self, source, *args):
        return self.command("POST", "/execute/sync", {"script": source, "args": list(args)})

    def screenshot(self, path):
        png = base64.b64decode(self.command("GET", "/screenshot"))
        with open(path, "wb") as file:
            file.write(png)

    def browser_log(self):
        return self.command("POST", "/se/log", {"type": "browser"}) or []

    def quit(self):
        if self.session is not None:
            try:
                self.command("DELETE", "")
            except (OSError, Failed):
                pass
            self.session = None


def wait_for(driver, source, what, *args):
    """Run `source` until it returns something truthy; return that."""
    deadline = time.monotonic() + WAIT_S
    last = None
    while time.monotonic() < deadline:
        last = driver.script(source, *args)
        if last:
            return last
        time.sleep(0.2)
    raise Failed(f"{what}: not seen within {WAIT_S} s (last answer {last!r})")


def show(driver, admin, page):
    driver.open(f"{admin}/#{page}")
    wait_for(
        driver,
        "return document.querySelector('#page-' + arguments[0]).classList.contains('active');",
        f"the {page} page",
        page,
    )


def check_cluster(driver, admin, expect, artifacts):
    step("cluster page lists this broker, live")
    show(driver, admin, "cluster")
    broker = wait_for(
        driver,
        """
        const row = document.querySelector('#brokers tr[data-broker]');
        if (!row) return null;
        return {id: row.dataset.broker, cells: [...row.cells].map((cell) => cell.textContent)};
        """,
        "a broker row",
    )
    check(broker["id"] == str(expect["node_id"]), f"broker row {broker}")
    check(broker["cells"][3] == "live", f"broker state {broker}")
    check("this broker" in broker["cells"][0], f"broker row {broker}")
    summary = driver.script("return document.querySelector('#cluster-summary').textContent;")
    check("cluster id" in summary and "controller" in summary, f"summary {summary!r}")
    driver.screenshot(os.path.join(artifacts, "cluster.png"))


def check_topics(driver, admin, expect, artifacts):
    topic = expect["topic"]
    step(f"topics page lists {topic} with {len(expect['end_offsets'])} partitions")
    show(driver, admin, "topics")
    rows = wait_for(
        driver,
        """
        const rows = [...document.querySelectorAll('#topics tr[data-topic]')]
          .filter((row) => row.dataset.topic === arguments[0]);
        if (rows.length !== arguments[1]) return null;
        return rows.map((row) => ({
          partition: Number(row.dataset.partition),
          leader: row.querySelector('.leader').textContent,
          replicas: row.querySelector('.replicas').textContent,
          isr: row.querySelector('.isr').textContent,
          end: row.querySelector('.end-offset').textContent,
          size: row.querySelector('.size').textContent,
        }));
        """,
        f"the partitions of {topic}",
        topic,
        len(expect["end_offsets"]),
    )
    node = str(expect["node_id"])
    for row in rows:
        partition = row["partition"]
        check(row["leader"] == node, f"leader of partition {partition}: {row}")
        check(row["replicas"] == node and row["isr"] == node, f"replicas of {partition}: {row}")
        wanted = str(expect["end_offsets"][partition])
        check(row["end"] == wanted, f"end offset of partition {partition}: {row}, want {wanted}")
        check(row["size"] not in ("", "0 B", "\u2013"), f"size of partition {partition}: {row}")
    name, value = expect["config"]
    config = driver.script(
        """
        const card = [...document.querySelectorAll('#topics .topic')]
          .find((card) => card.dataset.topic === arguments[0]);
        return [...card.querySelectorAll('.config')].map((tag) => tag.textContent);
        """,
        topic,
    )
    check(f"{name}={value}" in config, f"configs of {topic}: {config}")
    internal = driver.script(
        "return [...document.querySelectorAll('#topics .topic')].map((card) => card.dataset.topic);"
    )
    check("__consumer_offsets" not in internal, f"internal topics shown by default: {internal}")
    driver.screenshot(os.path.join(artifacts, "topics.png"))


def check_groups(driver, admin, expect, artifacts):
    show(driver, admin, "groups")
    for group in expect["groups"]:
        group_id = group["id"]
        step(f"groups page shows {group_id!r}: lag {group['lags']}")
        seen = wait_for(
            driver,
            """
            const card = [...document.querySelectorAll('#groups .group')]
              .find((card) => card.dataset.group === arguments[0]);
            if (!card) return null;
            const lags = {};
            for (const row of card.querySelectorAll('.offsets tr[data-topic]')) {
              lags[row.dataset.partition] = row.dataset.lag;
            }
            const seen = {
              title: card.querySelector('.group-id').textContent,
              state: card.querySelector('.group-state').textContent,
              members: card.querySelectorAll('tr.member').length,
              total: card.dataset.totalLag,
              lags: lags,
            };
            return JSON.stringify(seen.lags) === JSON.stringify(arguments[1])
              && seen.members === arguments[2] ? seen : null;
            """,
            f"group {group_id!r} with lags {group['lags']} and {group['members']} member(s)",
            group_id,
            {str(partition): str(lag) for partition, lag in group["lags"].items()},
            group["members"],
        )
        check(seen["title"] == group_id, f"group id shown as {seen['title']!r}")
        check(seen["state"] == group["state"], f"state of {group_id!r}: {seen}")
        check(seen["total"] == str(group["total_lag"]), f"total lag of {group_id!r}: {seen}")
    injected = driver.script("return document.querySelectorAll('#groups img, #groups b').length;")
    check(injected == 0, f"{injected} element(s) injected by a group id")
    driver.screenshot(os.path.join(artifacts, "groups.png"))


def check_charts(driver, admin, artifacts):
    step("charts page draws throughput and latency from several samples")
    show(driver, admin, "charts")
    wait_for(
        driver,
        """
        const samples = window.sluiceConsole.state.samples;
        // The traffic: 1000-byte records, about 20 a second, read back.
        return samples.length >= 6
          && samples.some((sample) => sample.produceBytes > 5000)
          && samples.some((sample) => sample.fetchBytes > 5000)
          && samples.some((sample) => sample.produceP99 > 0 && sample.fetchP99 > 0)
          && Number(document.querySelector('#chart-throughput').dataset.samples) >= 6;
        """,
        "six samples with produce and fetch traffic",
    )
    for chart in ("chart-throughput", "chart-latency"):
        drawn = driver.script(
            """
            const canvas = document.getElementById(arguments[0]);
            const pixels = canvas.getContext('2d')
              .getImageData(0, 0, canvas.width, canvas.height).data;
            let colored = 0;
            for (let index = 0; index < pixels.length; index += 4) {
              const [red, green, blue] = [pixels[index], pixels[index + 1], pixels[index + 2]];
              if (Math.max(red, green, blue) - Math.min(red, green, blue) > 60) colored += 1;
            }
            return colored;
            """,
            chart,
        )
        check(drawn > 100, f"{chart}: only {drawn} colored pixels (no series drawn?)")
    p99 = driver.script("return window.sluiceConsole.quantile(0.99, [1, 2, 4], [0, 100, 0, 0]);")
    check(1 < p99 <= 2, f"quantile of one bucket: {p99}")
    escaped = driver.script("return window.sluiceConsole.escapeHtml(`<a href=\"x\">'&`);")
    check(escaped == "&lt;a href=&quot;x&quot;&gt;&#39;&amp;", f"escapeHtml: {escaped}")
    driver.screenshot(os.path.join(artifacts, "charts.png"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin", required=True, help="http://HOST:PORT of --admin-listen")
    parser.add_argument("--chromedriver", required=True)
    parser.add_argument("--chromium", required=True)
    parser.add_argument("--driver-port", type=int, required=True)
    parser.add_argument("--artifacts", required=True)
    parser.add_argument("--expect", required=True, help="the expected numbers, JSON")
    arguments = parser.parse_args()
    expect = json.loads(arguments.expect)
    os.makedirs(arguments.artifacts, exist_ok=True)
    driver_log = open(os.path.join(arguments.artifacts, "chromedriver.log"), "wb")
    process = subprocess.Popen(
        [arguments.chromedriver, f"--port={arguments.driver_port}"],
        stdout=driver_log,
        stderr=subprocess.STDOUT,
    )
    driver = WebDriver(arguments.driver_port)
    try:
        driver.wait_ready(process)
        driver.start(arguments.chromium, 1280, 1400)
        step("the browser's log is read (a probe error shows in it)")
        probe = "sluice console test: log probe"
        driver.script("console.error(arguments[0]);", probe)
        early = driver.browser_log()
        check(any(probe in entry.get("message", "") for entry in early), f"no probe in {early}")
        check_cluster(driver, arguments.admin, expect, arguments.artifacts)
        check_topics(driver, arguments.admin, expect, arguments.artifacts)
        check_groups(driver, arguments.admin, expect, arguments.artifacts)
        check_charts(driver, arguments.admin, arguments.artifacts)
        step("the browser's log holds no error")
        log = driver.browser_log()
        with open(os.path.join(arguments.artifacts, "browser.log"), "w") as file:
            for entry in log:
                file.write(f"{entry.get('level')} {entry.get('message')}\n")
        errors = [entry for entry in log if entry.get("level") == "SEVERE"]
        check(not errors, f"errors in the browser's log: {errors}")
    except Failed as failure:
        try:
            driver.screenshot(os.path.join(arguments.artifacts, "failure.png"))
            for entry in driver.browser_log():
                print(f"browser log: {entry.get('level')} {entry.get('message')}", flush=True)
        except (OSError, Failed, KeyError, TypeError):
            pass
        print(f"FAILED: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        driver.quit()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        driver_log.close()
    print(f"OK: screenshots in {arguments.artifacts}", flush=True)


if __name__ == "__main__":
    main()
