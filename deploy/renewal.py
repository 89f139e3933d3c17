"""Renews the school's certificates at 60 days left, on the admin's machine, where the school CA's key is.

The CA's key never leaves the admin's machine and opens only with the passphrase in ansible-vault, so no
timer on the gateway can sign anything. Instead a systemd user timer on the admin's machine runs this once
a week: it reads the end dates of the certificates in inventory/<school>/credentials/tls/ and, only when
one has fewer than --days left, runs the playbook with the vault password file, which renews them (and
every other one within --days) and rolls them out node by node, each drained from the gateway's line first.
When nothing is due it changes nothing and runs nothing.

    deploy/renew-certificates -i inventory/<school> --vault-password-file ~/.config/schulki/<school>.vault-pass --install-timer
"""

from __future__ import annotations

import argparse
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "services"))

from schulki.certificates import days_left, load_certificate  # noqa: E402 - the path above makes it importable

RENEW_DAYS = 60
"""Days before its end at which a certificate is renewed: the Admin tab warns at 30, so a missed week or two still leaves time."""


def days_to_end(folder: Path) -> dict[str, float]:
    """Each certificate of the credentials folder (the CA and every host) with the days it has left."""
    return {path.stem: days_left(load_certificate(path)) for path in sorted(folder.glob("*.crt"))}


def playbook_command(inventory: Path, vault_password_file: Path, days: int) -> list[str]:
    """The roll-out with the vault password from a file, renewing every certificate with fewer than days left."""
    return [
        str(REPO / ".venv" / "bin" / "ansible-playbook"),
        *("-i", str(inventory)),
        str(REPO / "deploy" / "site.yml"),
        *("--vault-password-file", str(vault_password_file)),
        *("-e", f"schulki_stack_tls_renew_days={days}"),
    ]


def units(inventory: Path, vault_password_file: Path, days: int) -> dict[str, str]:
    """The systemd user service and its weekly timer for one school's inventory."""
    school = inventory.resolve().name
    command = shlex.join(
        [
            str(REPO / "deploy" / "renew-certificates"),
            "-i",
            str(inventory.resolve()),
            "--vault-password-file",
            str(vault_password_file.resolve()),
            "--days",
            str(days),
        ]
    )
    service = f"""[Unit]
Description=schulki: renew the certificates of {school} at {days} days left
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
WorkingDirectory={REPO}
ExecStart={command}
"""
    timer = f"""[Unit]
Description=schulki: look once a week whether a certificate of {school} is due for renewal

[Timer]
OnCalendar=Sat *-*-* 03:00
RandomizedDelaySec=1h
# A machine that was off on Saturday night runs it at its next start.
Persistent=true

[Install]
WantedBy=timers.target
"""
    return {f"schulki-renew-{school}.service": service, f"schulki-renew-{school}.timer": timer}


def vault_file_problem(path: Path) -> str | None:
    if not path.is_file():
        return f"{path}: there is no such file (write the vault password into it, alone on one line)"
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        return f"{path}: others may read it; it opens the CA's key: chmod 600 {shlex.quote(str(path))}"
    return None


def install_timer(inventory: Path, vault_password_file: Path, days: int, folder: Path, enable: bool) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    written = units(inventory, vault_password_file, days)
    for name, text in written.items():
        (folder / name).write_text(text)
        print(f"wrote {folder / name}")
    timer = next(name for name in written if name.endswith(".timer"))
    if enable:
        for command in (["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", timer]):
            if subprocess.run(command, check=False).returncode != 0:
                return 1
        print(f"Enabled {timer}; let it run while you are logged out too: loginctl enable-linger {os.environ.get('USER', '$USER')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/renew-certificates", description=__doc__.split("\n\n")[0])
    parser.add_argument("-i", "--inventory", type=Path, required=True, help="the school's inventory folder")
    parser.add_argument("--vault-password-file", type=Path, required=True, help="the vault password, mode 0600")
    parser.add_argument("--days", type=int, default=RENEW_DAYS, help="renew certificates with fewer days left (default 60)")
    parser.add_argument("--dry-run", action="store_true", help="say what is due and which command would run, run nothing")
    parser.add_argument("--install-timer", action="store_true", help="install and enable the weekly systemd user timer")
    parser.add_argument("--units-dir", type=Path, default=Path.home() / ".config" / "systemd" / "user", help=argparse.SUPPRESS)
    parser.add_argument("--no-enable", action="store_true", help="with --install-timer: write the units only")
    args = parser.parse_args(argv)
    problem = vault_file_problem(args.vault_password_file)
    if problem:
        print(f"schulki renewal: {problem}", file=sys.stderr)
        return 2
    if args.install_timer:
        return install_timer(args.inventory, args.vault_password_file, args.days, args.units_dir, not args.no_enable)
    folder = args.inventory / "credentials" / "tls"
    ends = days_to_end(folder)
    if not ends:
        print(f"schulki renewal: no certificates in {folder}: run the playbook once first", file=sys.stderr)
        return 2
    due = {name: left for name, left in ends.items() if left < args.days}
    if not due:
        print(f"nothing to renew: the first certificate ends in {min(ends.values()):.0f} days (renewal at {args.days})")
        return 0
    print("due for renewal: " + ", ".join(f"{name} ({left:.0f} days left)" for name, left in sorted(due.items(), key=lambda x: x[1])))
    command = playbook_command(args.inventory, args.vault_password_file, args.days)
    if args.dry_run:
        print("would run: " + shlex.join(command))
        return 0
    print("running: " + shlex.join(command), flush=True)
    return subprocess.run(command, cwd=REPO, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
