/*
 * NotifyHub playground: the notification preferences panel (GET/PATCH /api/preferences/,
 * live `preferences:updated`). Loaded before playground.js, which creates the panel with its
 * own helpers and drives it per connected identity.
 *
 * The panel shows the effective preferences the hub returns: the three channel switches, a
 * row per category seen so far (in the preferences or in notifications) with a switch per
 * channel, and quiet hours. Saving sends a PATCH of only what was changed on the page, so
 * what the user did not touch keeps following the tenant's defaults. A channel the tenant
 * locked for a category is shown on and cannot be switched.
 */
(function () {
  "use strict";

  const CHANNELS = [
    ["in_app", "In-app"],
    ["email", "Email"],
    ["push", "Push"],
  ];

  function localTimeZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    } catch (_err) {
      return "UTC";
    }
  }

  /**
   * options: {root, el, log, showError}; root is the panel element holding the form.
   * Returns {attach(request), detach(), show(preferences), seeCategory(name)}; request is
   * (method, path, body) -> Promise of the JSON reply, with the identity's token.
   */
  function createPanel(options) {
    const { root, el, log, showError } = options;
    const find = (id) => root.querySelector(`[data-testid="${id}"]`);
    const form = find("preferences-form");
    const rows = find("preference-categories");
    const empty = find("categories-empty");
    const status = find("preferences-status");
    const save = find("preferences-save");
    const quiet = {
      enabled: find("quiet-enabled"),
      start: find("quiet-start"),
      end: find("quiet-end"),
      timezone: find("quiet-timezone"),
    };

    let request = null; // set while an identity is connected
    let shown = null; // the effective preferences on screen
    const seen = new Set(); // categories of notifications, shown even with no preference

    function setStatus(state, text) {
      status.dataset.state = state;
      status.textContent = text || state;
    }

    /** What a category row shows for a channel: its own decision, else the switch. */
    function categoryValue(name, channel) {
      const entry = shown.categories[name] || {};
      return typeof entry[channel] === "boolean" ? entry[channel] : shown.channels[channel];
    }

    function toggle(testid, checked, locked, label) {
      return el("input", {
        type: "checkbox",
        checked,
        disabled: locked,
        title: locked ? "Locked on by your organisation" : undefined,
        "aria-label": label,
        dataset: { testid, original: String(checked) },
      });
    }

    function categoryRow(name) {
      const locked = new Set((shown.categories[name] || {}).locked || []);
      return el(
        "tr",
        { dataset: { testid: "category-row", category: name } },
        el("th", { scope: "row", text: name }),
        ...CHANNELS.map(([channel, label]) =>
          el(
            "td",
            {},
            toggle(
              "category-" + channel,
              categoryValue(name, channel),
              locked.has(channel),
              `${label} for ${name}`
            )
          )
        )
      );
    }

    function render() {
      if (!shown) return;
      for (const [channel] of CHANNELS) {
        const box = find("channel-" + channel);
        box.checked = shown.channels[channel];
        box.dataset.original = String(box.checked);
      }
      const names = [...new Set([...Object.keys(shown.categories), ...seen])].sort();
      rows.replaceChildren(...names.map(categoryRow));
      empty.hidden = names.length > 0;
      const hours = shown.quiet_hours;
      quiet.enabled.checked = Boolean(hours);
      quiet.start.value = hours ? hours.start : "22:00";
      quiet.end.value = hours ? hours.end : "07:00";
      quiet.timezone.value = hours ? hours.timezone : localTimeZone();
      for (const input of Object.values(quiet)) input.dataset.original = inputValue(input);
    }

    const inputValue = (input) => (input.type === "checkbox" ? String(input.checked) : input.value);
    const changed = (input) => inputValue(input) !== input.dataset.original;

    /** A PATCH body of what was changed on the page since the last render. */
    function patchBody() {
      const body = {};
      for (const [channel] of CHANNELS) {
        const box = find("channel-" + channel);
        if (changed(box)) (body.channels ||= {})[channel] = box.checked;
      }
      for (const row of rows.querySelectorAll('[data-testid="category-row"]')) {
        for (const [channel] of CHANNELS) {
          const box = row.querySelector(`[data-testid="category-${channel}"]`);
          if (!box.disabled && changed(box)) {
            const categories = (body.categories ||= {});
            (categories[row.dataset.category] ||= {})[channel] = box.checked;
          }
        }
      }
      if (Object.values(quiet).some(changed)) {
        body.quiet_hours = quiet.enabled.checked
          ? { start: quiet.start.value, end: quiet.end.value, timezone: quiet.timezone.value.trim() }
          : null;
      }
      return body;
    }

    function show(preferences) {
      if (!preferences || typeof preferences !== "object" || !preferences.channels) return;
      shown = preferences;
      render();
      setStatus("connected", "up to date");
    }

    async function attach(newRequest) {
      request = newRequest;
      seen.clear();
      save.disabled = false;
      setStatus("loading", "loading");
      try {
        const preferences = await request("GET", "/api/preferences/");
        if (request === newRequest) show(preferences);
      } catch (err) {
        if (request === newRequest) {
          setStatus("error", "not loaded");
          showError(err.message);
        }
      }
    }

    function detach() {
      request = null;
      shown = null;
      seen.clear();
      rows.replaceChildren();
      empty.hidden = false;
      save.disabled = true;
      setStatus("offline");
    }

    function seeCategory(name) {
      if (typeof name !== "string" || !name || seen.has(name)) return;
      seen.add(name);
      const existing = [...rows.querySelectorAll('[data-testid="category-row"]')];
      if (!shown || existing.some((row) => row.dataset.category === name)) return;
      // Only the new row is added, in order: a re-render would drop unsaved switches.
      const after = existing.find((row) => row.dataset.category > name) || null;
      rows.insertBefore(categoryRow(name), after);
      empty.hidden = true;
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const current = request;
      if (!current) return;
      const body = patchBody();
      if (Object.keys(body).length === 0) {
        setStatus("connected", "nothing changed");
        return;
      }
      save.disabled = true;
      setStatus("loading", "saving");
      try {
        const preferences = await current("PATCH", "/api/preferences/", body);
        log("preferences saved", body);
        if (request === current) {
          show(preferences);
          setStatus("connected", "saved");
        }
      } catch (err) {
        if (request === current) {
          setStatus("error", "not saved");
          showError(err.message);
        }
      } finally {
        if (request === current) save.disabled = false;
      }
    });

    return { attach, detach, show, seeCategory };
  }

  window.NotifyHubPreferences = { createPanel };
})();
