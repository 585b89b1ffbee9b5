"""libvirt's authentication callback: it answers the user name and password asked for, and nothing else.

A libvirtd with SASL authentication is not part of these tests; what the
driver hands libvirt is checked here, in the shape libvirt asks in:
``[type, prompt, challenge, default, result]`` per credential.
"""

from __future__ import annotations

from typing import Any

import libvirt
from powerdrivers_libvirt._connection import credentials_callback

from powerdrivers._secrets import Secret


def _asked(*kinds: int) -> list[list[Any]]:
    return [[kind, "prompt", "challenge", "default", None] for kind in kinds]


def test_the_callback_answers_user_name_and_password() -> None:
    credentials = _asked(libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE)
    assert credentials_callback("admin", Secret("hunter2"))(credentials, None) == 0
    assert [credential[4] for credential in credentials] == ["admin", "hunter2"]


def test_what_the_driver_was_not_given_is_answered_empty() -> None:
    credentials = _asked(libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE)
    assert credentials_callback(None, None)(credentials, None) == 0
    assert [credential[4] for credential in credentials] == ["", ""]


def test_other_questions_are_left_unanswered() -> None:
    credentials = _asked(libvirt.VIR_CRED_ECHOPROMPT, libvirt.VIR_CRED_REALM, libvirt.VIR_CRED_PASSPHRASE)
    assert credentials_callback("admin", Secret("hunter2"))(credentials, None) == 0
    assert [credential[4] for credential in credentials] == [None, None, "hunter2"]
