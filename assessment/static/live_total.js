/* The assessor's form: a running total and level while scoring.
 *
 * Only a guide: the level bands, the adjustment threshold and the words come from the page
 * (#instrument-data, written by the server from the instrument file), and the server scores
 * everything again when the form is submitted. No libraries, no network.
 */
(function () {
  "use strict";
  var form = document.getElementById("assessment-form");
  var dataNode = document.getElementById("instrument-data");
  if (!form || !dataNode) return;
  var data = JSON.parse(dataNode.textContent);
  var text = data.text;
  var maxRank = Math.max.apply(null, data.levels.map(function (l) { return l.rank; }));

  function format(template, values) {
    return template.replace(/\{(\w+)\}/g, function (_, key) { return values[key]; });
  }

  function chosen(code) {
    var input = form.querySelector('input[name="score-' + code + '"]:checked');
    return input ? parseInt(input.value, 10) : null;
  }

  function bandFor(total) {
    for (var i = 0; i < data.levels.length; i++) {
      var level = data.levels[i];
      if (level.min <= total && total <= level.max) return level;
    }
    return null;
  }

  function byRank(rank) {
    for (var i = 0; i < data.levels.length; i++) {
      if (data.levels[i].rank === rank) return data.levels[i];
    }
    return null;
  }

  // Same rule as assessment/scoring.py: coma -> complete; otherwise a psychiatric diagnosis
  // (ICD-10 F00-F99) or enough care-risk events raise the level by one, once.
  function adjust(base) {
    var coma = form.elements.coma && form.elements.coma.checked;
    if (coma) return { level: byRank(maxRank), reasons: ["coma"] };
    var reasons = [];
    var codes = (form.elements.diagnoses ? form.elements.diagnoses.value : "")
      .split(/[\s,;，；、]+/).filter(Boolean);
    if (codes.some(function (c) { return /^F\d{2}/i.test(c.trim()); })) {
      reasons.push("psychiatric_diagnosis");
    }
    var events = parseInt(form.elements.care_risk_events_30d
      ? form.elements.care_risk_events_30d.value : "0", 10);
    if (!isNaN(events) && events >= data.careRiskThreshold) reasons.push("care_risk_events");
    var rank = base.rank + (reasons.length ? 1 : 0);
    return { level: byRank(Math.min(rank, maxRank)), reasons: reasons };
  }

  function setText(id, value) {
    var node = document.getElementById(id);
    if (node && node.textContent !== value) node.textContent = value;
  }

  function update() {
    var total = 0;
    var answered = 0;
    Object.keys(data.dimensions).forEach(function (dim) {
      var sum = 0;
      data.dimensions[dim].forEach(function (code) {
        var score = chosen(code);
        if (score === null) return;
        sum += score;
        answered += 1;
      });
      setText("dim-total-" + dim, String(sum));
      total += sum;
    });
    setText("live-total-figure", String(total));
    setText("live-answered", format(text.answered, { n: answered, total: data.items.length }));
    var levelNode = document.getElementById("live-level");
    if (answered < data.items.length) {
      setText("live-level", "—");
      setText("live-adjustments", text.incomplete);
      if (levelNode) levelNode.removeAttribute("data-level");
      return;
    }
    var base = bandFor(total);
    var result = adjust(base);
    setText("live-level", result.level.label);
    if (levelNode) levelNode.setAttribute("data-level", result.level.code);
    var notes = result.reasons.map(function (r) { return text.adjustments[r]; });
    if (result.level.code !== base.code) notes.push(format(text.fromTotal, { level: base.label }));
    setText("live-adjustments", notes.join(" · "));
  }

  form.addEventListener("change", update);
  form.addEventListener("input", update);
  update();
})();
