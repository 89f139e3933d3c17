"""A real OpenLDAP server (Debian's slapd) with a school's tree, for the directory sign-in tests.

The server runs from a folder of its own (slapd -f with a slapd.conf there, its database there), on a free loopback
port, speaks StartTLS with the tests' certificate (tests.conftest.shared_tls) and refuses simple binds without TLS,
as a school's server should. The folder goes when the server stops.

The tree is shaped like a UCS@school / paedML Linux school: people under ou=schueler and ou=lehrer, one group per
class named "schule-<class>", the role groups "schueler" and "lehrer" (the teachers' group holds the subject group
"fachschaft-bio" rather than its members: a nested group), and a disabled student. UCS marks a disabled account with
``shadowExpire: 1``; the sign-in's search filter leaves such accounts out, as a school's filter does.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port, shared_tls
from tests.service_support import wait_until

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
BASE = "dc=schule,dc=test"
ROOT_DN = f"cn=admin,{BASE}"
ROOT_PASSWORD = "root-geheim-4711"
PASSWORDS = {
    "anna": "anna-passwort-1",
    "ben": "ben-passwort-22",
    "carla": "carla-passwort-3",
    "weber": "weber-passwort-4",
    "ada": "ada-passwort-55",
}
"""Each person's password in the test tree."""
USERS_FILTER = "(&(objectClass=inetOrgPerson)(uid={name})(!(shadowExpire=1)))"
"""The sign-in filter of a UCS school: people by their uid, disabled accounts (shadowExpire 1) left out."""


def ssha(password: str) -> str:
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def person(uid: str, ou: str, disabled: bool = False) -> str:
    extra = "objectClass: shadowAccount\nshadowExpire: 1\n" if disabled else ""
    return (
        f"dn: uid={uid},ou={ou},{BASE}\nobjectClass: inetOrgPerson\n"
        f"uid: {uid}\ncn: {uid.title()}\nsn: {uid.title()}\nuserPassword: {ssha(PASSWORDS[uid])}\n{extra}\n"
    )


def group(name: str, members: list[str]) -> str:
    lines = "".join(f"member: {member}\n" for member in members)
    return f"dn: cn={name},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: {name}\n{lines}\n"


def school_tree() -> str:
    def pupil(uid: str) -> str:
        return f"uid={uid},ou=schueler,{BASE}"

    weber, ada = f"uid=weber,ou=lehrer,{BASE}", f"uid=ada,ou=lehrer,{BASE}"
    parts = [
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: schule\no: Testschule\n\n",
        *(f"dn: ou={ou},{BASE}\nobjectClass: organizationalUnit\nou: {ou}\n\n" for ou in ("schueler", "lehrer", "groups")),
        person("anna", "schueler"),
        person("ben", "schueler"),
        person("carla", "schueler", disabled=True),
        person("weber", "lehrer"),
        person("ada", "lehrer"),
        group("schule-7a", [pupil("anna"), pupil("carla"), weber]),
        group("schule-7b", [pupil("ben")]),
        group("schueler", [pupil("anna"), pupil("ben"), pupil("carla")]),
        group("fachschaft-bio", [weber]),
        group("lehrer", [f"cn=fachschaft-bio,ou=groups,{BASE}"]),  # nested: weber is a teacher through her subject group
        group("schulki-admins", [ada]),
    ]
    return "".join(parts)


@dataclass
class Slapd:
    url: str
    folder: Path
    ca_file: Path

    def connection(self):
        """A connection as the directory's admin (over StartTLS), to change the tree during a test."""
        import ssl

        import ldap3

        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(self.ca_file))
        server = ldap3.Server(self.url, tls=tls, connect_timeout=10)
        return ldap3.Connection(server, ROOT_DN, ROOT_PASSWORD, auto_bind=ldap3.AUTO_BIND_TLS_BEFORE_BIND, receive_timeout=20)


def _config(folder: Path, tls) -> str:
    schema = "".join(f"include /etc/ldap/schema/{name}.schema\n" for name in ("core", "cosine", "nis", "inetorgperson"))
    return f"""{schema}
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {folder}/slapd.pid
argsfile {folder}/slapd.args
TLSCACertificateFile {tls.ca_file}
TLSCertificateFile {tls.cert_file}
TLSCertificateKeyFile {tls.key_file}
security simple_bind=128
database mdb
maxsize 67108864
suffix "{BASE}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {folder}/db
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
"""


@contextlib.contextmanager
def running_slapd() -> Iterator[Slapd]:
    """slapd with the school tree on a free loopback port; stopped and its folder removed afterwards."""
    tls = shared_tls()
    folder = Path(tempfile.mkdtemp(prefix="schulki-slapd-"))
    try:
        (folder / "db").mkdir()
        conf = folder / "slapd.conf"
        conf.write_text(_config(folder, tls))
        (folder / "tree.ldif").write_text(school_tree())
        subprocess.run([SLAPADD, "-f", str(conf), "-l", str(folder / "tree.ldif")], check=True, capture_output=True, timeout=60)
        port = free_port()
        url = f"ldap://127.0.0.1:{port}"
        # -d 0: stay in the foreground, so the test owns the process and stops it by its id
        process = subprocess.Popen([SLAPD, "-f", str(conf), "-h", url + "/", "-d", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            server = Slapd(url, folder, tls.ca_file)

            def answers() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"slapd stopped: {process.stdout.read().decode(errors='replace') if process.stdout else ''}")
                try:
                    server.connection().unbind()
                except Exception:  # not listening yet
                    return False
                return True

            wait_until(answers, timeout=60, what="slapd", interval=0.2)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
