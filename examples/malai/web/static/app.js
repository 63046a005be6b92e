// Malai web app: the only script of every page. It is loaded by nonce
// (and checked by Subresource Integrity); the CSP allows nothing else.
// It never touches a token: the browser has none.
'use strict';
(function () {
  // The one Trusted Types policy the CSP allows ("trusted-types malai").
  // Creating it first reserves the name, so an injected script cannot
  // create it. Nothing here writes HTML or script, so every conversion is
  // refused: a sink used anywhere on the page is a reported violation.
  if (window.trustedTypes && window.trustedTypes.createPolicy) {
    var refuse = function () { throw new TypeError('malai: no HTML or script sinks on this page'); };
    window.trustedTypes.createPolicy('malai', { createHTML: refuse, createScript: refuse, createScriptURL: refuse });
  }

  function ready(fn) {
    if (document.readyState === 'loading') {
      document.addEventListener('DOMContentLoaded', fn);
    } else {
      fn();
    }
  }

  // Password rules, checked as the user types: the same rules the
  // identity service applies (it has the last word).
  var checks = {
    'too-short': function (pw) { return Array.from(pw).length >= 12; },
    'missing-lowercase': function (pw) { return /\p{Ll}/u.test(pw); },
    'missing-uppercase': function (pw) { return /\p{Lu}/u.test(pw); },
    'missing-digit': function (pw) { return /\p{Nd}/u.test(pw); },
    'missing-symbol': function (pw) { return /[^\p{L}\p{Nd}]/u.test(pw); },
    'contains-username': function (pw, user) {
      return user.length < 3 || pw.toLowerCase().indexOf(user.toLowerCase()) < 0;
    },
    'repetitive': function (pw) { return new Set(Array.from(pw)).size >= 5; }
  };

  function watchRules(input) {
    var list = document.getElementById(input.dataset.rules);
    if (!list) { return; }
    var items = list.querySelectorAll('li[data-rule]');
    var status = document.getElementById(input.dataset.rules + '-status');
    var userField = input.dataset.username ? document.getElementById(input.dataset.username) : null;
    var timer = 0;
    function update() {
      var pw = input.value.normalize('NFKC');
      var user = userField ? userField.value.trim() : (input.dataset.usernameValue || '');
      var met = 0;
      items.forEach(function (li) {
        var check = checks[li.dataset.rule];
        var ok = pw.length > 0 && check && check(pw, user);
        li.classList.toggle('met', ok);
        li.classList.remove('broken');
        var state = li.querySelector('.state');
        if (state) { state.textContent = ok ? ' (met)' : ' (not met)'; }
        if (ok) { met++; }
      });
      if (status) {
        clearTimeout(timer);
        timer = setTimeout(function () {
          status.textContent = met + ' of ' + items.length + ' password rules met';
        }, 600);
      }
    }
    input.addEventListener('input', update);
    if (userField) { userField.addEventListener('input', update); }
    if (input.value) { update(); }
  }

  // One submission per form rendering: a second click does nothing. (The
  // server does not rely on this: the transfer form's Idempotency-Key
  // makes a repeated request apply once.)
  function guard(form) {
    form.addEventListener('submit', function (ev) {
      if (form.dataset.sent === '1') {
        ev.preventDefault();
        return;
      }
      form.dataset.sent = '1';
      form.setAttribute('aria-busy', 'true');
      setTimeout(function () {
        form.querySelectorAll('button[type=submit]').forEach(function (b) { b.disabled = true; });
      }, 0);
    });
  }

  // Queued transfers: poll their status until they finish, then reload
  // once so the balances show the result.
  var terminal = { succeeded: true, failed: true };
  function poll(row) {
    var url = row.dataset.poll;
    var tries = 0;
    function once() {
      tries++;
      fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
        .then(function (r) { return r.json(); })
        .then(function (st) {
          var badge = row.querySelector('[data-status]');
          var detail = row.querySelector('[data-detail]');
          badge.textContent = st.status;
          badge.className = 'badge ' + String(st.status).replace(/[^a-z-]/g, '');
          detail.textContent = st.detail || '';
          if (terminal[st.status]) {
            setTimeout(function () { window.location.reload(); }, 800);
          } else if (tries < 120) {
            setTimeout(once, 1000);
          }
        })
        .catch(function () { if (tries < 120) { setTimeout(once, 2000); } });
    }
    setTimeout(once, 500);
  }

  ready(function () {
    document.querySelectorAll('input[data-rules]').forEach(watchRules);
    document.querySelectorAll('form[data-once]').forEach(guard);
    document.querySelectorAll('tr[data-poll]').forEach(poll);
    var summary = document.getElementById('error-summary');
    if (summary) { summary.focus(); }
  });
})();
