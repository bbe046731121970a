"""Third-party usage telemetry stays off unless the user opted in.

OpenVINO's converter (``ovc``) and NNCF ask ``openvino_telemetry`` for consent with the opt-in
dialog disabled, and then a *missing* consent file counts as consent: every conversion sends events
to Google Analytics and writes a client id and counters under ``~/intel``. sdopt runs those tools
inside its users' builds and containers (outside GitHub Actions, whose ``CI=true`` turns it off),
where nobody was asked, so here a missing file counts as declined. An explicit choice made with
OpenVINO's ``opt_in_out --opt_in`` or ``--opt_out`` is kept. Declining also saves the events'
construction (0.1-0.2 s per conversion on the 2-core machine: it walks the stack and probes the
container runtime).
"""

from __future__ import annotations

import functools

_MARK = "_sdopt_declines_missing_consent"


def decline_telemetry_without_consent() -> bool:
    """Make a missing consent file mean "declined" for every OpenVINO tool in this process.

    Idempotent; returns whether ``openvino_telemetry`` is installed. An instance configured before
    this ran (OpenVINO used before sdopt was imported) is asked again.
    """
    try:
        from openvino_telemetry.utils import opt_in_checker

        checker = opt_in_checker.OptInChecker
        checker.check, opt_in_checker.ConsentCheckResult.NO_FILE  # noqa: B018 - the API used
    except (ImportError, AttributeError):  # not installed, or another API: left as it is
        return False
    if not getattr(checker.check, _MARK, False):
        original = checker.check
        no_file = opt_in_checker.ConsentCheckResult.NO_FILE
        declined = opt_in_checker.ConsentCheckResult.DECLINED

        @functools.wraps(original)
        def check(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            return declined if result == no_file else result

        setattr(check, _MARK, True)
        checker.check = check
    _recheck_configured_instance(opt_in_checker)
    return True


def _recheck_configured_instance(opt_in_checker) -> None:
    try:
        from openvino_telemetry import main as telemetry_main
    except ImportError:
        return
    # The singleton's slot is name-mangled by its metaclass; reading it does not create one.
    instance = getattr(telemetry_main.Telemetry, "_SingletonMetaClass__single_instance", None)
    if instance is not None and getattr(instance, "consent", False):
        result = opt_in_checker.OptInChecker().check(False, True)
        instance.consent = result == opt_in_checker.ConsentCheckResult.ACCEPTED
