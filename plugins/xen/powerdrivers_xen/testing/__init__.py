"""A XenAPI (xapi) simulator for testing the Xen driver over the real wire protocol.

Written from the published XenAPI reference (the object model, the VM lifecycle and its error
codes, as documented and as implemented in xapi's ``datamodel``, ``xapi_vm_lifecycle``,
``message_forwarding`` and ``xapi_event``), not from a real host's traffic. It serves XenAPI
over XML-RPC on ``http://127.0.0.1:<port>/`` with the standard library only, so the official
``XenAPI`` SDK (or any XML-RPC client) talks to it exactly as to xapi::

    with XapiSimulator() as sim:
        session = XenAPI.Session(sim.url)
        session.xenapi.login_with_password(DEFAULT_USERNAME, DEFAULT_PASSWORD, "1.0", "tests")

What it covers:

* the xapi envelope (``Status``/``Value``/``ErrorDescription``) and conventions: int64s and
  enums as strings, ``OpaqueRef:`` references, ``OpaqueRef:NULL`` and ``""`` instead of nil;
* sessions: ``session.login_with_password`` (2 to 4 arguments), ``session.logout``,
  ``session.get_this_host``; SESSION_AUTHENTICATION_FAILED, SESSION_INVALID;
* ``VM``, ``VM_metrics``, ``task``, ``host`` and ``pool``: ``get_all``, ``get_all_records``,
  ``get_record``, ``get_by_uuid``, ``get_by_name_label`` (VM, task, host) and every
  ``get_<field>``; HANDLE_INVALID, UUID_INVALID;
* the power lifecycle: ``VM.start``/``start_on``, ``clean_shutdown``, ``hard_shutdown``,
  ``clean_reboot``, ``hard_reboot``, ``pause``, ``unpause``, ``suspend``, ``resume``/``resume_on``,
  each also as ``Async.VM.<op>`` returning a task, with xapi's checks and errors
  (VM_BAD_POWER_STATE, OTHER_OPERATION_IN_PROGRESS, VM_IS_TEMPLATE, VM_IS_SNAPSHOT,
  OPERATION_NOT_ALLOWED on the control domain), ``current_operations`` and
  ``allowed_operations`` kept up to date, guests that honour or ignore clean shutdown/reboot
  (VM_SHUTDOWN_TIMEOUT), hard operations cancelling pending clean ones (TASK_CANCELLED);
  ``VM.assert_operation_valid``;
* tasks: ``task.get_status``/``get_result``/``get_error_info``/``get_progress``/``get_record``...,
  ``task.cancel``, ``task.destroy``;
* ``event.from`` with tokens, subscriptions by class, ``*`` or object, and long-polling;
* VCPU statistics: ``VM_metrics.VCPUs_utilisation``, ``VM.get_data_sources`` /
  ``VM.query_data_source`` / ``VM.record_data_source`` (``cpuN``, ``memory``, and the domain
  run-state fractions ``runstate_*`` once recorded), deterministic and changing over time, or
  set per VCPU by a test (running and waiting-for-a-CPU fractions);
* the ``/rrd_updates`` HTTP handler (``session_id`` or HTTP Basic authentication, ``start``,
  ``cf``, ``vm_uuid``; rrdtool ``xport`` XML of the finest archive), as xapi's metrics
  documentation describes it;
* test controls on :class:`XapiSimulator`: restart, hang, stall, session expiry, credentials,
  call counts, scripted (malformed) ``event.from`` and ``/rrd_updates`` answers, VMs in any power state
  (``"Crashed"`` or any string), guest behaviour and timing.

What it does not cover: storage (SR, VDI, VBD), networking (network, PIF, VIF), consoles,
guest metrics and agents, migration, snapshots and clones as operations, VM creation through the
API, pools of several hosts, RBAC, HTTP handlers other than ``/rrd_updates`` (``vm_rrd``,
``host_rrd``, import/export) and its JSON form, coarser RRD archives, JSON-RPC, TLS,
``event.register``/``event.next``, and ``Async.`` forms of anything but the power operations.
``python -m powerdrivers_xen.testing`` runs one in the foreground.
"""

from ._defaults import CONTROL_DOMAIN, DEFAULT_VMS
from ._errors import XapiError
from ._simulator import DEFAULT_PASSWORD, DEFAULT_USERNAME, XapiSimulator
from ._spec import VmSpec, stable_uuid

__all__ = [
    "CONTROL_DOMAIN",
    "DEFAULT_PASSWORD",
    "DEFAULT_USERNAME",
    "DEFAULT_VMS",
    "VmSpec",
    "XapiError",
    "XapiSimulator",
    "stable_uuid",
]
