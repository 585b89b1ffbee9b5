"""The xapi error codes the simulator raises, and the exception that carries one to the wire.

Codes and parameter orders follow xapi's ``datamodel_errors`` and the code that raises them
(``xapi_vm_lifecycle``, ``xapi_event``, ``message_forwarding``); each constant's comment gives
the parameters in the order they travel in ``ErrorDescription``.
"""

from __future__ import annotations

SESSION_AUTHENTICATION_FAILED = "SESSION_AUTHENTICATION_FAILED"  # [username, message]
SESSION_INVALID = "SESSION_INVALID"  # [handle]
HANDLE_INVALID = "HANDLE_INVALID"  # [class, handle]
UUID_INVALID = "UUID_INVALID"  # [class, uuid]
VM_BAD_POWER_STATE = "VM_BAD_POWER_STATE"  # [vm, expected (", "-joined, lowercase), actual (lowercase)]
VM_IS_TEMPLATE = "VM_IS_TEMPLATE"  # [vm, operation]
VM_IS_SNAPSHOT = "VM_IS_SNAPSHOT"  # [vm, operation]
OPERATION_NOT_ALLOWED = "OPERATION_NOT_ALLOWED"  # [reason]
OTHER_OPERATION_IN_PROGRESS = "OTHER_OPERATION_IN_PROGRESS"  # ["VM.<op>" or "VM.{op,op}", vm]
VM_SHUTDOWN_TIMEOUT = "VM_SHUTDOWN_TIMEOUT"  # [vm, timeout seconds]
TASK_CANCELLED = "TASK_CANCELLED"  # [task]
MESSAGE_METHOD_UNKNOWN = "MESSAGE_METHOD_UNKNOWN"  # [method]
MESSAGE_PARAMETER_COUNT_MISMATCH = "MESSAGE_PARAMETER_COUNT_MISMATCH"  # [method, expected, received]
FIELD_TYPE_ERROR = "FIELD_TYPE_ERROR"  # [parameter name]
EVENT_FROM_TOKEN_PARSE_FAILURE = "EVENT_FROM_TOKEN_PARSE_FAILURE"  # noqa: S105 - [token]
INTERNAL_ERROR = "INTERNAL_ERROR"  # [message]


class XapiError(Exception):
    """A xapi failure: a code and its string parameters, sent as ``ErrorDescription``."""

    def __init__(self, code: str, *params: str) -> None:
        super().__init__(code, *params)
        self.code = code
        self.params: tuple[str, ...] = tuple(params)

    @property
    def description(self) -> list[str]:
        """The ``ErrorDescription`` list: the code, then its parameters."""
        return [self.code, *self.params]
