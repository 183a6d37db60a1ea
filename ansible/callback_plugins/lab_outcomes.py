"""Ansible callback: every host's outcome of a play as JSON, for lab fleet (lab/fleet/ansible.py reads it).

A notification callback: the normal output is unchanged. It writes only when LAB_ANSIBLE_OUTCOMES names a
file: {"stats": {host: {ok, changed, unreachable, failures, skipped}}, "why": {host: "task: message"}}.
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: lab_outcomes
type: notification
short_description: write each host's play outcome as JSON for lab fleet
description:
  - Writes per-host stats and the first failure's reason to the file named by LAB_ANSIBLE_OUTCOMES.
requirements:
  - enabled in callbacks_enabled (lab's ansible.cfg does)
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "lab_outcomes"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.why: dict[str, str] = {}

    def _note(self, result, what: str) -> None:
        host = result._host.get_name()
        if host in self.why:
            return
        res = result._result
        text = res.get("msg") or res.get("stderr") or res.get("stdout") or what
        self.why[host] = f"{result._task.get_name()}: {' '.join(str(text).split())[:300]}"

    def v2_runner_on_failed(self, result, ignore_errors: bool = False) -> None:
        if not ignore_errors:
            self._note(result, "failed")

    def v2_runner_on_unreachable(self, result) -> None:
        self._note(result, "unreachable")

    def v2_playbook_on_stats(self, stats) -> None:
        path = os.environ.get("LAB_ANSIBLE_OUTCOMES")
        if not path:
            return
        hosts = sorted(stats.processed.keys())
        doc = {"stats": {h: stats.summarize(h) for h in hosts}, "why": self.why}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
