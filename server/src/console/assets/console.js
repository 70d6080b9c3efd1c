// The Sluice console: a read-only view of one broker, hand-written (no
// framework, no build step). It polls the admin port's JSON endpoints and
// renders tables; the charts are drawn on <canvas> from successive readings
// of /v1/counters. Every value inserted into HTML goes through escapeHtml:
// topic names, group ids, client ids and hosts are user input.
"use strict";

(function () {
  const DATA_INTERVAL_MS = 2000;
  const COUNTERS_INTERVAL_MS = 1000;
  // Five minutes of one-second samples.
  const SAMPLES_MAX = 300;
  // The x axis spans at least this many samples (a minute), then grows
  // with them up to SAMPLES_MAX.
  const WINDOW_MIN = 60;

  const state = {
    page: "cluster",
    showInternal: false,
    // Readings of /v1/counters: {at (ms), counters}.
    readings: [],
    // Derived points: {at, produceBytes, fetchBytes, produceP99, fetchP99}.
    samples: [],
    errors: 0,
  };

  function escapeHtml(value) {
    if (value === null || value === undefined) {
      return "";
    }
    return String(value)
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;")
      .replace(/'/g, "&#39;");
  }

  // A cell's text: a dash for null (unknown here).
  function orDash(value) {
    return value === null || value === undefined ? "\u2013" : escapeHtml(value);
  }

  function formatBytes(bytes) {
    if (bytes === null || bytes === undefined) {
      return "\u2013";
    }
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? String(value) : value.toFixed(1)) + " " + units[unit];
  }

  function formatSeconds(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) {
      return "\u2013";
    }
    if (seconds === 0) {
      return "0";
    }
    if (seconds < 0.001) {
      return (seconds * 1e6).toFixed(0) + " \u00b5s";
    }
    if (seconds < 1) {
      return (seconds * 1e3).toFixed(1) + " ms";
    }
    return seconds.toFixed(2) + " s";
  }

  function setStatus(text, isError) {
    const status = document.getElementById("status");
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  async function getJson(path) {
    const response = await fetch(path, { cache: "no-store" });
    const body = await response.json();
    if (!response.ok) {
      throw new Error(path + ": " + (body.error || response.status));
    }
    return body;
  }

  // ---- pages -------------------------------------------------------------

  function showPage() {
    const wanted = (window.location.hash || "#cluster").slice(1);
    state.page = ["cluster", "topics", "groups", "charts"].includes(wanted) ? wanted : "cluster";
    for (const section of document.querySelectorAll(".page")) {
      section.classList.toggle("active", section.id === "page-" + state.page);
    }
    for (const link of document.querySelectorAll("nav a")) {
      link.classList.toggle("active", link.dataset.page === state.page);
    }
    refreshData();
    if (state.page === "charts") {
      drawCharts();
    }
  }

  function renderCluster(cluster) {
    const summary = [
      ["cluster id", cluster.cluster_id],
      ["this broker", cluster.node_id],
      ["controller", cluster.controller_id],
      ["ready", cluster.ready ? "yes" : "no: " + (cluster.not_ready_reason || "")],
      ["metadata offset", cluster.metadata_offset],
      ["topics", cluster.topic_count],
      ["partitions", cluster.partition_count],
      ["version", cluster.version],
    ];
    document.getElementById("cluster-summary").innerHTML = summary
      .map(([name, value]) => "<dt>" + escapeHtml(name) + "</dt><dd>" + orDash(value) + "</dd>")
      .join("");
    const rows = cluster.brokers.map((broker) => {
      const listeners = broker.listeners
        .map((listener) =>
          '<span class="tag">' + escapeHtml(listener.name) + " " +
          escapeHtml(listener.host) + ":" + escapeHtml(listener.port) + "</span>")
        .join("");
      return '<tr data-broker="' + escapeHtml(broker.id) + '">' +
        "<td>" + escapeHtml(broker.id) +
        (broker.this_broker ? ' <span class="tag">this broker</span>' : "") +
        (broker.id === cluster.controller_id ? ' <span class="tag">controller</span>' : "") +
        "</td>" +
        '<td class="mono">' + escapeHtml(broker.address) + "</td>" +
        "<td>" + orDash(broker.rack) + "</td>" +
        '<td class="state-' + escapeHtml(broker.state.replace(/ /g, "-")) + '">' +
        escapeHtml(broker.state) + "</td>" +
        "<td>" + listeners + "</td>" +
        '<td class="number">' + escapeHtml(broker.partitions_led) + "</td></tr>";
    });
    document.querySelector("#brokers tbody").innerHTML =
      rows.join("") || '<tr><td colspan="6" class="empty">no brokers registered yet</td></tr>';
    setStatus("broker " + cluster.node_id + (cluster.ready ? " ready" : " not ready"),
      !cluster.ready);
  }

  function renderTopics(topics) {
    const shown = topics.topics.filter((topic) => state.showInternal || !topic.internal);
    const cards = shown.map((topic) => {
      const partitions = topic.partitions.map((partition) =>
        '<tr data-topic="' + escapeHtml(topic.name) + '" data-partition="' +
        escapeHtml(partition.partition) + '">' +
        '<td class="number">' + escapeHtml(partition.partition) + "</td>" +
        '<td class="number leader">' + orDash(partition.leader) + "</td>" +
        '<td class="replicas">' + escapeHtml(partition.replicas.join(", ")) + "</td>" +
        '<td class="isr' + (partition.under_replicated ? " bad" : "") + '">' +
        escapeHtml(partition.isr.join(", ")) + "</td>" +
        '<td class="number">' + orDash(partition.log_start_offset) + "</td>" +
        '<td class="number end-offset">' + orDash(partition.high_watermark) + "</td>" +
        '<td class="number">' + orDash(partition.log_end_offset) + "</td>" +
        '<td class="number size">' + formatBytes(partition.size_bytes) + "</td></tr>"
      ).join("");
      const configNames = Object.keys(topic.configs);
      const configs = configNames.length === 0
        ? '<span class="empty">broker defaults</span>'
        : configNames.map((name) =>
          '<span class="tag config" data-config="' + escapeHtml(name) + '">' +
          escapeHtml(name) + "=" + escapeHtml(topic.configs[name]) + "</span>").join("");
      return '<div class="card topic" data-topic="' + escapeHtml(topic.name) + '">' +
        "<h2>" + escapeHtml(topic.name) +
        (topic.internal ? ' <span class="tag">internal</span>' : "") + "</h2>" +
        '<p class="note">' + escapeHtml(topic.partitions.length) +
        (topic.partitions.length === 1 ? " partition, " : " partitions, ") +
        formatBytes(topic.local_size_bytes) + ' here; id <span class="mono">' +
        escapeHtml(topic.id) + "</span></p>" +
        "<p>" + configs + "</p>" +
        "<table><thead><tr>" +
        '<th class="number">partition</th><th class="number">leader</th><th>replicas</th>' +
        '<th>ISR</th><th class="number">start offset</th><th class="number">high watermark</th>' +
        '<th class="number">log end offset</th><th class="number">size</th>' +
        "</tr></thead><tbody>" + partitions + "</tbody></table></div>";
    });
    let html = cards.join("") || '<p class="empty">no topics</p>';
    if (topics.shards_missing > 0) {
      html = '<p class="bad">' + escapeHtml(topics.shards_missing) +
        " shard(s) did not answer in time: their partitions show no offsets.</p>" + html;
    }
    document.getElementById("topics").innerHTML = html;
  }

  function renderGroups(groups) {
    const cards = groups.groups.map((group) => {
      const members = group.members.map((member) =>
        '<tr class="member">' +
        '<td class="mono">' + escapeHtml(member.member_id) +
        (member.leader ? ' <span class="tag">leader</span>' : "") + "</td>" +
        "<td>" + orDash(member.instance_id) + "</td>" +
        "<td>" + escapeHtml(member.client_id) + "</td>" +
        '<td class="mono">' + escapeHtml(member.client_host) + "</td>" +
        "<td>" + member.assignment.map((topic) =>
          '<span class="tag">' + escapeHtml(topic.topic) + " [" +
          escapeHtml(topic.partitions.join(", ")) + "]</span>").join("") + "</td></tr>"
      ).join("");
      const offsets = group.offsets.map((offset) =>
        '<tr data-topic="' + escapeHtml(offset.topic) + '" data-partition="' +
        escapeHtml(offset.partition) + '" data-lag="' + escapeHtml(offset.lag) + '">' +
        "<td>" + escapeHtml(offset.topic) + "</td>" +
        '<td class="number">' + escapeHtml(offset.partition) + "</td>" +
        '<td class="number committed">' + escapeHtml(offset.committed_offset) + "</td>" +
        '<td class="number end-offset">' + orDash(offset.end_offset) + "</td>" +
        '<td class="number lag">' + orDash(offset.lag) + "</td></tr>"
      ).join("");
      return '<div class="card group" data-group="' + escapeHtml(group.group_id) +
        '" data-total-lag="' + escapeHtml(group.total_lag) + '">' +
        '<h2 class="group-id">' + escapeHtml(group.group_id) + "</h2>" +
        '<p>state <span class="group-state state-' + escapeHtml(group.state) + '">' +
        escapeHtml(group.state) + "</span>, generation " + orDash(group.generation) +
        ", coordinator " + orDash(group.coordinator) +
        ", protocol " + orDash(group.protocol_type) + "/" + orDash(group.protocol) +
        ', total lag <span class="total-lag">' + orDash(group.total_lag) + "</span></p>" +
        "<h3>Members (" + escapeHtml(group.members.length) + ")</h3>" +
        (members
          ? "<table><thead><tr><th>member id</th><th>instance id</th><th>client id</th>" +
            "<th>host</th><th>assignment</th></tr></thead><tbody>" + members + "</tbody></table>"
          : '<p class="empty">no members</p>') +
        "<h3>Committed offsets</h3>" +
        (offsets
          ? '<table class="offsets"><thead><tr><th>topic</th><th class="number">partition</th>' +
            '<th class="number">committed</th><th class="number">end offset</th>' +
            '<th class="number">lag</th></tr></thead><tbody>' + offsets + "</tbody></table>"
          : '<p class="empty">no committed offsets</p>') +
        "</div>";
    });
    let html = cards.join("") || '<p class="empty">no groups coordinated by this broker</p>';
    if (groups.shards_missing > 0) {
      html = '<p class="bad">' + escapeHtml(groups.shards_missing) +
        " shard(s) did not answer in time: their groups are missing.</p>" + html;
    }
    document.getElementById("groups").innerHTML = html;
  }

  let refreshing = false;

  async function refreshData() {
    if (refreshing) {
      return;
    }
    refreshing = true;
    try {
      renderCluster(await getJson("/v1/cluster"));
      if (state.page === "topics") {
        renderTopics(await getJson("/v1/topics"));
      } else if (state.page === "groups") {
        renderGroups(await getJson("/v1/groups"));
      }
      document.body.dataset.refreshed = String(Date.now());
    } catch (error) {
      state.errors += 1;
      setStatus("cannot read the broker: " + error.message, true);
    } finally {
      refreshing = false;
    }
  }

  // ---- charts ------------------------------------------------------------

  // The q-quantile of a histogram's bucket counts (not cumulative; the
  // last bucket above every bound), interpolated linearly inside the
  // bucket as Prometheus's histogram_quantile does; null when empty.
  function quantile(q, bounds, counts) {
    const total = counts.reduce((sum, count) => sum + count, 0);
    if (total === 0) {
      return null;
    }
    const rank = q * total;
    let below = 0;
    for (let index = 0; index < counts.length; index += 1) {
      if (below + counts[index] >= rank && counts[index] > 0) {
        if (index >= bounds.length) {
          return bounds[bounds.length - 1];
        }
        const lower = index === 0 ? 0 : bounds[index - 1];
        return lower + (bounds[index] - lower) * ((rank - below) / counts[index]);
      }
      below += counts[index];
    }
    return bounds[bounds.length - 1];
  }

  function difference(later, earlier) {
    return later.map((value, index) => Math.max(0, value - (earlier[index] || 0)));
  }

  async function pollCounters() {
    let counters;
    try {
      counters = await getJson("/v1/counters");
    } catch (error) {
      state.errors += 1;
      setStatus("cannot read the broker: " + error.message, true);
      return;
    }
    const at = counters.uptime_ms;
    const previous = state.readings[state.readings.length - 1];
    state.readings.push({ at: at, counters: counters });
    if (state.readings.length > 2) {
      state.readings.shift();
    }
    if (previous && at > previous.at) {
      const seconds = (at - previous.at) / 1000;
      const last = previous.counters;
      const bounds = counters.latency_bounds_seconds;
      state.samples.push({
        at: at,
        produceBytes: Math.max(0, counters.produce_bytes - last.produce_bytes) / seconds,
        fetchBytes: Math.max(0, counters.fetch_bytes - last.fetch_bytes) / seconds,
        produceP99: quantile(0.99, bounds,
          difference(counters.produce_latency_buckets, last.produce_latency_buckets)),
        fetchP99: quantile(0.99, bounds,
          difference(counters.fetch_latency_buckets, last.fetch_latency_buckets)),
      });
      if (state.samples.length > SAMPLES_MAX) {
        state.samples.shift();
      }
    }
    if (state.page === "charts") {
      drawCharts();
    }
  }

  // A rounded-up axis maximum: 1, 2 or 5 times a power of ten, in units of
  // the largest power of `base` (1024 for bytes, so that the ticks read as
  // round KiB or MiB) not above the value.
  function niceMax(value, base) {
    if (!(value > 0)) {
      return 1;
    }
    if (base > 1 && value >= base) {
      const unit = Math.pow(base, Math.floor(Math.log(value) / Math.log(base)));
      return niceMax(value / unit, 0) * unit;
    }
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 5, 10]) {
      if (value <= step * power) {
        return step * power;
      }
    }
    return 10 * power;
  }

  // Draw `series` ({label, color, values}) over the samples on `canvas`,
  // with a labelled y axis (`format`, round in units of `base`) and a
  // legend.
  function drawChart(canvas, series, format, base) {
    const context = canvas.getContext("2d");
    const width = canvas.width;
    const height = canvas.height;
    const left = 80;
    const right = 16;
    const top = 28;
    const bottom = 24;
    const plotWidth = width - left - right;
    const plotHeight = height - top - bottom;
    context.clearRect(0, 0, width, height);
    context.fillStyle = "#ffffff";
    context.fillRect(0, 0, width, height);
    let maximum = 0;
    for (const line of series) {
      for (const value of line.values) {
        if (value !== null && value > maximum) {
          maximum = value;
        }
      }
    }
    maximum = niceMax(maximum, base);
    context.font = "12px system-ui, sans-serif";
    context.textBaseline = "middle";
    const ticks = 4;
    for (let tick = 0; tick <= ticks; tick += 1) {
      const y = top + plotHeight - (plotHeight * tick) / ticks;
      context.strokeStyle = tick === 0 ? "#8a93a5" : "#e3e7ee";
      context.beginPath();
      context.moveTo(left, y);
      context.lineTo(left + plotWidth, y);
      context.stroke();
      context.fillStyle = "#5c6577";
      context.textAlign = "right";
      context.fillText(format((maximum * tick) / ticks), left - 8, y);
    }
    const span = Math.min(SAMPLES_MAX, Math.max(WINDOW_MIN,
      series.length ? series[0].values.length : 0));
    context.textAlign = "left";
    context.fillText("last " + span + " s", left, top + plotHeight + 14);
    let legendX = left;
    for (const line of series) {
      context.fillStyle = line.color;
      context.fillRect(legendX, 8, 12, 12);
      context.fillStyle = "#1d2330";
      const latest = line.values.length ? line.values[line.values.length - 1] : null;
      const text = line.label + " " + (latest === null ? "\u2013" : format(latest));
      context.fillText(text, legendX + 16, 14);
      legendX += context.measureText(text).width + 40;
    }
    const step = plotWidth / (span - 1);
    for (const line of series) {
      const offset = span - line.values.length;
      context.strokeStyle = line.color;
      context.lineWidth = 2;
      context.beginPath();
      let drawing = false;
      line.values.forEach((value, index) => {
        if (value === null) {
          drawing = false;
          return;
        }
        const x = left + (offset + index) * step;
        const y = top + plotHeight - (plotHeight * value) / maximum;
        if (drawing) {
          context.lineTo(x, y);
        } else {
          context.moveTo(x, y);
          drawing = true;
        }
      });
      context.stroke();
      context.lineWidth = 1;
    }
    canvas.dataset.samples = String(series.length ? series[0].values.length : 0);
    canvas.dataset.maximum = String(maximum);
  }

  function drawCharts() {
    const samples = state.samples;
    drawChart(document.getElementById("chart-throughput"), [
      { label: "produce", color: "#1f6feb", values: samples.map((sample) => sample.produceBytes) },
      { label: "fetch", color: "#1a7f37", values: samples.map((sample) => sample.fetchBytes) },
    ], (value) => formatBytes(Math.round(value)) + "/s", 1024);
    drawChart(document.getElementById("chart-latency"), [
      { label: "Produce p99", color: "#8250df", values: samples.map((sample) => sample.produceP99) },
      { label: "Fetch p99", color: "#bc4c00", values: samples.map((sample) => sample.fetchP99) },
    ], formatSeconds, 0);
  }

  function start() {
    const internal = document.getElementById("show-internal");
    internal.addEventListener("change", () => {
      state.showInternal = internal.checked;
      refreshData();
    });
    window.addEventListener("hashchange", showPage);
    showPage();
    pollCounters();
    window.setInterval(refreshData, DATA_INTERVAL_MS);
    window.setInterval(pollCounters, COUNTERS_INTERVAL_MS);
  }

  // For tests and the curious: the derived samples and the pure helpers.
  window.sluiceConsole = {
    state: state,
    escapeHtml: escapeHtml,
    quantile: quantile,
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
