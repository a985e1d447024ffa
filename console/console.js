// The Farmhand console's one script: it fills the page's tables from the plane's live
// stream (/console/events, a snapshot at each change) and filters them. No framework, no
// build step, nothing from another origin (the page's CSP allows none). Times show in the
// browser's zone, with UTC on hover.
'use strict';

(() => {
  const page = document.body.dataset.page;
  if (page === 'login' || page === 'forbidden') {
    return;
  }
  const status = document.getElementById('status');
  const filter = document.getElementById('filter');
  let last = null;

  function when(iso) {
    if (!iso) {
      return { text: '—', title: '' };
    }
    const d = new Date(iso);
    // Today's times without the date: the tables stay narrow enough for 1280 px.
    const today = d.toDateString() === new Date().toDateString();
    return { text: today ? d.toLocaleTimeString() : d.toLocaleString(), title: d.toISOString().replace('.000Z', 'Z') + ' (UTC)' };
  }

  /** An agent id, shortened (the whole id on hover). */
  function agentCell(tr, id) {
    return cell(tr, id && id.length > 15 ? id.slice(0, 14) + '…' : id, id);
  }

  function cell(tr, text, title) {
    const td = document.createElement('td');
    td.textContent = text === null || text === undefined || text === '' ? '—' : String(text);
    if (title) {
      td.title = title;
    }
    tr.appendChild(td);
    return td;
  }

  /** A <time> showing `iso` in the browser's zone, UTC on hover. */
  function timeEl(iso) {
    const t = when(iso);
    const time = document.createElement('time');
    time.dateTime = iso;
    time.title = t.title;
    time.textContent = t.text;
    return time;
  }

  function timeCell(tr, iso) {
    const td = cell(tr, null);
    if (iso) {
      td.replaceChildren(timeEl(iso));
    }
  }

  function link(href, text) {
    const a = document.createElement('a');
    a.href = href;
    a.textContent = text;
    return a;
  }

  /** <dt>/<dd> pairs for a <dl>; `state` marks the dd of the pair named so. */
  function definitions(pairs, state) {
    return pairs.flatMap(([k, v]) => {
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      dd.textContent = v === null || v === undefined || v === '' ? '—' : String(v);
      if (state && k === 'State') {
        dd.dataset.state = state;
      }
      return [dt, dd];
    });
  }

  function badge(tr, text, kind) {
    const td = cell(tr, '');
    const span = document.createElement('span');
    span.className = 'badge ' + kind;
    span.textContent = text;
    td.replaceChildren(span);
    return td;
  }

  function matches(values) {
    const wanted = filter ? filter.value.trim().toLowerCase() : '';
    return !wanted || values.some((v) => v !== null && v !== undefined && String(v).toLowerCase().includes(wanted));
  }

  function fill(id, rows, render) {
    const table = document.getElementById(id);
    if (!table) {
      return;
    }
    const fragment = document.createDocumentFragment();
    for (const row of rows) {
      const tr = document.createElement('tr');
      render(tr, row);
      fragment.appendChild(tr);
    }
    table.tBodies[0].replaceChildren(fragment);
    const empty = document.getElementById(id + '-empty');
    if (empty) {
      empty.hidden = rows.length > 0;
    }
  }

  const SVG = 'http://www.w3.org/2000/svg';
  const CHARTS = [
    ['allocations', 'Allocations live', ''],
    ['modems_online', 'Modems online', ''],
    ['command_ms', 'Command round trip', ' ms'],
    ['probes_ok_pct', 'Probes passed', ' %'],
  ];

  /** One small line chart of `key` over the samples (SVG attributes only: the CSP allows
   * no inline style). */
  function chart(samples, key, title, unit) {
    const figure = document.createElement('figure');
    figure.className = 'chart';
    figure.dataset.series = key;
    const points = samples.map((s, i) => [i, s[key]]).filter(([, v]) => v !== null && v !== undefined);
    const latest = points.length ? points[points.length - 1][1] : null;
    const caption = document.createElement('figcaption');
    caption.textContent = title + ': ' + (latest === null ? '—' : latest + unit);
    const [w, h] = [240, 60];
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', caption.textContent + ', over the last ' + samples.length + ' minutes');
    const max = Math.max(1, ...points.map(([, v]) => v));
    const span = Math.max(1, samples.length - 1);
    const xy = points.map(([i, v]) => `${((i / span) * (w - 4) + 2).toFixed(1)},${(h - 2 - (v / max) * (h - 4)).toFixed(1)}`);
    if (xy.length === 1) {
      xy.push(`${w - 2},${xy[0].split(',')[1]}`);
    }
    const line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('points', xy.join(' '));
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', '#1f5fbf');
    line.setAttribute('stroke-width', '2');
    svg.appendChild(line);
    figure.append(caption, svg);
    return figure;
  }

  function charts(s) {
    const box = document.getElementById('charts');
    if (box && s.trend) {
      box.replaceChildren(...CHARTS.map(([key, title, unit]) => chart(s.trend, key, title, unit)));
    }
  }

  function fleet(s) {
    charts(s);
    const agents = (s.agents || []).filter((a) => matches([a.agent_id, a.label, a.hostname, a.node]));
    fill('agents', agents, (tr, a) => {
      tr.dataset.agent = a.agent_id;
      agentCell(tr, a.agent_id);
      cell(tr, a.label);
      cell(tr, a.hostname);
      cell(tr, a.version);
      cell(tr, a.protocol ? 'v' + a.protocol : null);
      badge(tr, a.connected ? 'connected' : 'disconnected', a.connected ? 'ok' : 'bad');
      timeCell(tr, a.connected_since);
      timeCell(tr, a.last_seen);
      cell(tr, a.node || 'this node');
      cell(tr, a.modems_online + ' / ' + a.modems_total);
      cell(tr, '').replaceChildren(actionButton('revoke', a.agent_id, 'Revoke', 'Revoke agent ' + a.agent_id + '? Its box is cut off for good and its allocations end.'));
    });
    const modems = s.modems.filter((m) => matches([m.imei, m.agent_id, m.carrier, m.country, m.ext_ip]));
    const pools = new Map();
    for (const m of modems) {
      const key = (m.country || '—') + '\u0000' + (m.carrier || '—');
      const p = pools.get(key) || { country: m.country, carrier: m.carrier, online: 0, total: 0, sold: 0 };
      p.online += m.online ? 1 : 0;
      p.total += 1;
      p.sold += m.active_allocations;
      pools.set(key, p);
    }
    const byPool = [...pools.values()].sort((a, b) => b.total - a.total);
    fill('pools', byPool, (tr, p) => {
      cell(tr, p.country);
      cell(tr, p.carrier);
      cell(tr, p.online);
      cell(tr, p.total);
      cell(tr, p.sold);
    });
    fill('modems', modems, (tr, m) => modemRow(tr, m, true));
  }

  /** One modem's row; `linked`: its IMEI opens its page (not for sellers). */
  function modemRow(tr, m, linked) {
    tr.dataset.imei = m.imei;
    if (linked) {
      cell(tr, '').replaceChildren(link('/console/modems/' + encodeURIComponent(m.imei), m.imei));
    } else {
      cell(tr, m.imei);
    }
    agentCell(tr, m.agent_id);
    cell(tr, m.carrier);
    cell(tr, m.country);
    cell(tr, m.ext_ip);
    badge(tr, m.online ? 'online' : 'offline', m.online ? 'ok' : 'bad').dataset.state = m.online ? 'online' : 'offline';
    cell(tr, m.signal);
    cell(tr, m.active_allocations + ' / ' + m.capacity);
  }

  function allocationLink(a) {
    return link('/console/allocations/' + encodeURIComponent(a.allocation_id), a.allocation_id);
  }

  const STATE_KIND = { active: 'ok', replaced: 'ok', pending: 'warn', releasing: 'warn', released: 'idle', failed: 'bad' };

  function allocations(s) {
    const counts = document.getElementById('counts');
    const items = Object.entries(s.allocation_counts).map(([state, n]) => {
      const li = document.createElement('li');
      li.textContent = state + ': ' + n;
      li.dataset.state = state;
      return li;
    });
    counts.replaceChildren(...items);
    fill('allocations', s.allocations, (tr, a) => {
      tr.dataset.allocation = a.allocation_id;
      cell(tr, '').replaceChildren(allocationLink(a));
      cell(tr, a.order_id);
      badge(tr, a.state, STATE_KIND[a.state] || 'idle').dataset.state = a.state;
      cell(tr, a.imei, a.agent_id ? 'agent ' + a.agent_id : '');
      cell(tr, a.host ? a.host + ':' + a.http_port + ' / ' + a.socks_port : null);
      timeCell(tr, a.created_at);
      timeCell(tr, a.expires_at);
      cell(tr, a.replacements);
      const used = a.used_bytes === undefined || a.used_bytes === null ? null : megabytes(a.used_bytes);
      cell(tr, used === null ? null : used + (a.quota_mb ? ' of ' + a.quota_mb + ' MB' : ''));
      const probes = a.probe_health;
      if (probes) {
        badge(tr, probes, probes === 'ok' ? 'ok' : probes === 'degraded' ? 'bad' : 'idle').dataset.probes = probes;
      } else {
        cell(tr, null);
      }
    });
  }

  function health(s) {
    const dl = document.getElementById('health');
    if (!dl || !s.health) {
      return;
    }
    const rows = [
      ['Store', s.health.store + (s.health.schema_version ? ', schema version ' + s.health.schema_version : '')],
      ['This node', s.health.node || 'the only one (sled)'],
      ['Agents connected', s.health.agents_connected],
      ['Commands in flight', s.health.commands_in_flight + (s.health.oldest_in_flight_ms === null ? '' : ' (the oldest sent ' + (s.health.oldest_in_flight_ms / 1000).toFixed(1) + ' s ago)')],
      ['Webhook deliveries waiting', s.health.webhook_deliveries_pending],
      ['Requests refused by rate limits', s.health.rate_limited],
      ['Probe judging', s.health.probes_judging_paused ? 'paused: the plane cannot reach its probe target' : 'active'],
    ];
    dl.replaceChildren(...definitions(rows));
    fill('webhooks', s.health.webhooks, (tr, w) => {
      cell(tr, w.webhook_id);
      cell(tr, w.url);
      cell(tr, w.pending);
      const failed = cell(tr, w.failed);
      if (w.failed > 0) {
        failed.className = 'error';
      }
      cell(tr, w.last_error);
    });
    fill('commands', s.health.commands, (tr, c) => {
      cell(tr, c.op);
      cell(tr, c.in_flight);
      cell(tr, c.answered);
      cell(tr, c.mean_ms === null ? null : c.mean_ms + ' ms');
    });
  }

  function detail(s) {
    const d = s.detail;
    if (!d) {
      return;
    }
    const a = d.allocation;
    const facts = [
      ['State', a.state],
      ['Order', a.order_id],
      ['Modem', a.imei + (a.carrier ? ' (' + a.carrier + ', ' + a.country + ')' : '')],
      ['Endpoint', a.host ? a.host + ':' + a.http_port + ' (HTTP) / ' + a.socks_port + ' (SOCKS5)' : '—'],
      ['Probes', d.probes ? d.probes.health + (d.probes.reason ? ' (' + d.probes.reason + ')' : '') + ', ' + d.probes.ok + ' of ' + d.probes.probes + ' passed' : 'not probed yet'],
    ];
    document.getElementById('detail').replaceChildren(...definitions(facts, a.state));
    const live = ['pending', 'active', 'releasing'].includes(a.state);
    const actions = document.getElementById('actions');
    if (actions) {
      actions.replaceChildren(...(live && role !== 'seller' ? [actionButton('release', a.allocation_id, 'Release', 'Release ' + a.allocation_id + '? The buyer\'s port goes now.')] : []));
    }
    const items = d.timeline.map((e) => {
      const li = document.createElement('li');
      li.dataset.what = e.what;
      const what = document.createElement('strong');
      what.textContent = e.what;
      li.append(timeEl(e.at), ' ', what, e.detail ? ' — ' + e.detail : '');
      return li;
    });
    document.getElementById('timeline').replaceChildren(...items);
  }


  function note(text) {
    const p = document.createElement('p');
    p.className = 'empty';
    p.textContent = text;
    return p;
  }

  function modem(s) {
    const box = document.getElementById('copies');
    if (!box || !s.modem) {
      return;
    }
    const sections = s.modem.copies.map((c) => {
      const m = c.modem;
      const section = document.createElement('section');
      section.dataset.agent = m.agent_id;
      const h2 = document.createElement('h2');
      h2.textContent = 'On agent ' + m.agent_id + (m.duplicate_identity ? ' (duplicate IMEI: not sold)' : '');
      const r = c.last_rotation;
      const rotation = r ? (r.old_ip || '?') + ' → ' + (r.new_ip || 'no settled IP') + ' at ' + when(r.rotated_at).text + (r.automatic ? ' (automatic)' : '') : 'none recorded';
      const state = document.createElement('dl');
      state.append(...definitions([
        ['State', m.online ? 'online' : 'offline'],
        ['Carrier', m.carrier],
        ['Country', m.country],
        ['IP', m.ext_ip],
        ['Signal', m.signal],
        ['Network', m.network_type],
        ['SIM', m.sim_status],
        ['Sold', m.active_allocations + ' / ' + m.capacity + (m.available ? ' (can take more)' : '')],
        ['Last rotation', rotation],
      ], m.online ? 'online' : 'offline'));
      const changes = document.createElement('ul');
      for (const ch of m.identity_changes) {
        const li = document.createElement('li');
        li.dataset.kind = ch.kind;
        li.textContent = when(ch.at).text + ' ' + ch.kind.replace('_', ' ') + ': ' + (ch.from || '?') + ' → ' + (ch.to || '?');
        changes.appendChild(li);
      }
      const online = document.createElement('ul');
      for (const ch of c.history.online.slice().reverse()) {
        const li = document.createElement('li');
        li.dataset.online = ch.online ? 'online' : 'offline';
        li.append(timeEl(ch.at), ch.online ? ' back online' : ' went offline');
        online.appendChild(li);
      }
      const receipts = document.createElement('ul');
      for (const r of c.history.rotations.slice().reverse()) {
        const li = document.createElement('li');
        li.dataset.changed = String(r.changed);
        const took = r.took_ms === null ? '' : ' in ' + (r.took_ms / 1000).toFixed(1) + ' s';
        li.append(timeEl(r.at), ' ' + (r.old_ip || '?') + ' → ' + (r.new_ip || 'no settled IP') + took + (r.automatic ? ' (the box\'s own schedule)' : ''));
        receipts.appendChild(li);
      }
      const h3c = document.createElement('h3');
      h3c.textContent = 'Online history';
      const h3d = document.createElement('h3');
      h3d.textContent = 'Rotations';
      const sold = document.createElement('ul');
      for (const a of c.allocations) {
        const li = document.createElement('li');
        li.append(allocationLink(a), ' ' + a.state + ', order ' + a.order_id);
        sold.appendChild(li);
      }
      const h3a = document.createElement('h3');
      h3a.textContent = 'Identity changes';
      const h3b = document.createElement('h3');
      h3b.textContent = 'Sold on it';
      const buttons = document.createElement('p');
      buttons.className = 'actions';
      buttons.append(actionButton('rotate', m.imei, 'Rotate IP', 'Rotate the IP of modem ' + m.imei + ' now? Its buyers\' connections drop for a moment.'));
      if (m.duplicate_identity && role === 'admin') {
        buttons.append(' ', actionButton('resolve', m.imei, 'This copy is the real modem', 'Make agent ' + m.agent_id + '\'s copy of ' + m.imei + ' the one sold?', m.agent_id));
      }
      section.append(
        h2, state, buttons,
        h3c, online.children.length ? online : note('No change seen since the plane started.'),
        h3d, receipts.children.length ? receipts : note('None seen since the plane started.'),
        h3a, m.identity_changes.length ? changes : note('None seen since the plane started.'),
        h3b, c.allocations.length ? sold : note('Nothing live.'),
      );
      return section;
    });
    box.replaceChildren(...sections);
  }

  /** A box's health in a few words: load per CPU, memory free, the fullest disk. */
  function boxHealth(h) {
    if (!h) {
      return null;
    }
    const load = (h.load_centi[0] / 100).toFixed(2) + ' load on ' + h.cpus + ' CPU';
    const memory = Math.round((100 * h.memory_available_bytes) / Math.max(1, h.memory_total_bytes)) + ' % memory free';
    const fullest = h.disks.reduce((worst, d) => {
      const used = d.total_bytes ? 1 - d.available_bytes / d.total_bytes : 0;
      return used > worst ? used : worst;
    }, 0);
    return [load, memory, Math.round(fullest * 100) + ' % disk used'].join(', ');
  }

  /** What the box was seen to keep (its self-test's verdicts). */
  function keeps(c) {
    const names = { quota: 'quota', speed_limit: 'speed limit', expiry: 'expiry' };
    const seen = Object.entries(names).filter(([k]) => c[k] !== null && c[k] !== undefined);
    if (!seen.length) {
      return 'not tested yet';
    }
    return seen.map(([k, name]) => (c[k] ? '' : 'no ') + name).join(', ');
  }

  function boxes(s) {
    const list = s.boxes || [];
    fill('boxes', list, (tr, b) => {
      tr.dataset.agent = b.agent_id;
      agentCell(tr, b.agent_id);
      cell(tr, b.hostname);
      cell(tr, b.agent_version);
      badge(tr, b.connected ? 'connected' : 'disconnected', b.connected ? 'ok' : 'bad');
      timeCell(tr, b.connected_since);
      timeCell(tr, b.last_seen);
      cell(tr, boxHealth(b.health));
      cell(tr, keeps(b.capabilities));
      const q = b.quality_24h;
      cell(tr, q.score === null ? null : q.score, q.probes + ' probes, ' + q.rotations + ' rotations');
    });
    const modems = list.flatMap((b) => b.modems).filter((m) => matches([m.imei, m.agent_id, m.carrier, m.country, m.ext_ip]));
    fill('modems', modems, (tr, m) => modemRow(tr, m, false));
    const ports = list.flatMap((b) => b.sold.map((p) => ({ ...p, agent_id: b.agent_id })));
    fill('ports', ports, (tr, p) => {
      tr.dataset.allocation = p.allocation_id;
      cell(tr, p.allocation_id);
      cell(tr, p.imei);
      cell(tr, p.agent_id);
      badge(tr, p.state, STATE_KIND[p.state] || 'idle').dataset.state = p.state;
      timeCell(tr, p.created_at);
      timeCell(tr, p.expires_at);
    });
    fill('usage', s.usage || [], (tr, d) => {
      cell(tr, d.day);
      cell(tr, d.imei);
      cell(tr, d.agent_id);
      cell(tr, megabytes(d.bytes_in));
      cell(tr, megabytes(d.bytes_out));
    });
  }

  function megabytes(bytes) {
    return (bytes / 1e6).toFixed(bytes < 1e7 ? 2 : 0) + ' MB';
  }

  const role = document.body.dataset.role;

  /** A button doing `action` on `id` through the plane (after `question` is confirmed). */
  function actionButton(action, id, label, question, agentId) {
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.action = action;
    button.dataset.id = id;
    button.dataset.question = question;
    if (agentId) {
      button.dataset.agent = agentId;
    }
    button.textContent = label;
    return button;
  }

  async function act(button) {
    if (!window.confirm(button.dataset.question)) {
      return;
    }
    button.disabled = true;
    const body = { id: button.dataset.id };
    if (button.dataset.agent) {
      body.agent_id = button.dataset.agent;
    }
    try {
      const res = await fetch('/console/actions/' + button.dataset.action, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-console-csrf': document.body.dataset.csrf },
        body: JSON.stringify(body),
      });
      const answer = await res.json().catch(() => null);
      if (res.ok) {
        say(button.textContent + ': done.', 'ok');
      } else {
        say(button.textContent + ' refused: ' + ((answer && answer.error && answer.error.message) || res.status), 'warn');
      }
    } catch (e) {
      say(button.textContent + ' failed: ' + e, 'warn');
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    if (button) {
      act(button);
    }
  });

  const RENDER = { fleet, allocations, health, allocation: detail, modem, boxes };

  function render() {
    if (last && RENDER[page]) {
      RENDER[page](last);
    }
  }

  function say(text, kind) {
    status.textContent = text;
    status.className = kind;
  }

  if (filter) {
    filter.addEventListener('input', render);
  }
  // Each page's stream carries only what that page shows.
  const id = document.body.dataset.allocation || document.body.dataset.modem;
  const query = '?page=' + page + (id ? '&id=' + encodeURIComponent(id) : '');
  const source = new EventSource('/console/events' + query);
  source.addEventListener('snapshot', (event) => {
    last = JSON.parse(event.data);
    render();
    say('Live · updated ' + new Date().toLocaleTimeString(), 'ok');
  });
  source.addEventListener('stale', () => say('The plane cannot read its store: what you see may be out of date.', 'warn'));
  source.addEventListener('signed_out', () => {
    source.close();
    window.location.assign('/console/login');
  });
  source.onerror = () => say('Live updates interrupted: reconnecting…', 'warn');
})();
