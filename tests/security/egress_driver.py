"""Runs inside a network namespace that has only loopback: ``schulki up`` under strace, every feature driven, connects judged.

Started by ``test_gateway_zero_egress.py`` as ``unshare -n python -m tests.security.egress_driver OUT.json``.
It brings up ``lo``, starts ``schulki up`` (every service and the gateway, as
child processes) under ``strace -f``, drives every feature through headless
Chromium and through the API, stops the stack, and writes to OUT.json what
each feature gave and every connect or send outside loopback that any process
of the stack attempted. The browser runs in the namespace too, but not under
strace: it is the school's client, not schulki (and Chromium contacts Google
by itself).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import httpx

TRACED = "connect,sendto,sendmsg,sendmmsg"
LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|0\.0\.0\.0|::1|::|::ffff:127\.\d+\.\d+\.\d+)$")
ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"|->\[?([0-9a-fA-F:.]+?)\]?:\d+\]>')
SPEECH = "Guten Morgen. Heute lernen wir etwas über die Photosynthese."


def program_of(trace: str) -> dict[int, str]:
    """Which program each traced pid (thread or process) belongs to: ``gateway``, ``inference``, ..., ``up``.

    Built from the trace's clone/clone3 results (a child starts as its parent's
    program) and execve calls (``schulki.cli serve NAME``, ``schulki.gateway``).
    """
    programs: dict[int, str] = {}
    for line in trace.splitlines():
        head = re.match(r"^(\d+)(?:<[^>]*>)?\s+(?:<\.\.\. )?(clone3?|execve)(?:\(| resumed>)", line)
        if not head:
            continue
        pid = int(head.group(1))
        if head.group(2) == "execve":
            argv = line.split("[", 1)[1].split("]", 1)[0] if "[" in line else ""
            serve = re.search(r'"serve", "(\w+)"', argv)
            programs[pid] = serve.group(1) if serve else "gateway" if "schulki.gateway" in argv else "up" if '"up"' in argv else "other"
        else:
            child = re.search(r"= (\d+)(?:<[^>]*>)?\s*$", line)
            if child:
                programs[int(child.group(1))] = programs.get(pid, "up")
    return programs


def judge(trace: str) -> dict:
    """Every traced call that names an address outside loopback, by program; the one route probe of ``schulki up`` is only listed.

    ``launch.lan_url`` connects a UDP socket to 10.255.255.255 port 1 and sends
    nothing: it asks the kernel which interface leads out, to print the LAN
    address. Any other connect (TCP or UDP, a DNS lookup starts with one) or
    send to an outside address counts as an attempt to reach it.
    """
    programs = program_of(trace)
    attempts: dict[str, list[str]] = {}
    probes, calls = [], 0
    for line in trace.splitlines():
        match = re.match(r"^(\d+)(<[^>]*>)?\s+(connect|sendto|sendmsg|sendmmsg)\((\d+)(<[^>]*>)?", line)
        if not match:
            continue
        calls += 1
        if "AF_UNIX" in line or "AF_NETLINK" in line:
            continue
        outside = [a for group in ADDRESS.findall(line) for a in group if a and not LOOPBACK.match(a)]
        if not outside:
            continue
        is_probe = (
            match.group(3) == "connect"
            and (match.group(5) or "").startswith("<UDP")
            and 'inet_addr("10.255.255.255")' in line
            and "htons(1)" in line
        )
        if is_probe:
            probes.append(line)
        else:
            attempts.setdefault(programs.get(int(match.group(1)), "unknown"), []).append(line)
    return {"traced_calls": calls, "attempts": attempts, "udp_route_probes": probes}


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.5)


def drive_api(url: str, key: str, speech: Path, results: dict) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=300, verify=False) as api:  # a self-made certificate, on loopback
        results["api_models"] = [m["id"] for m in api.get("/v1/models").json()["data"]]
        chat = api.post(
            "/v1/chat/completions", json={"model": "schulki-chat", "max_tokens": 8, "messages": [{"role": "user", "content": "Hallo!"}]}
        )
        results["api_chat"] = chat.status_code
        with api.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "schulki-chat",
                "max_tokens": 8,
                "stream": True,
                "messages": [{"role": "user", "content": "Was ist ein Vulkan?"}],
            },
        ) as stream:
            results["api_chat_stream_chunks"] = sum(1 for line in stream.iter_lines() if line.startswith("data:"))
        embeddings = api.post("/v1/embeddings", json={"model": "schulki-embeddings", "input": ["Photosynthese", "Vulkan"]})
        results["api_embeddings"] = len(embeddings.json()["data"]) if embeddings.status_code == 200 else embeddings.status_code
        with speech.open("rb") as handle:
            transcript = api.post(
                "/v1/audio/transcriptions",
                data={"model": "whisper-1", "language": "de", "response_format": "srt"},
                files={"file": ("stunde.wav", handle, "audio/wav")},
            )
        results["api_transcription"] = transcript.status_code


def drive_browser(url: str, admin_password: str, student: tuple[str, str], files: dict, results: dict) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            for name, password in (student, ("admin", admin_password)):
                context = browser.new_context(locale="de-DE", accept_downloads=True, ignore_https_errors=True)
                page = context.new_page()
                page.set_default_timeout(240_000)
                page.goto(url + "/")
                page.fill("#name", name)
                page.fill("#password", password)
                page.click("button[type=submit]")
                page.wait_for_selector("#header >> text=Angemeldet als")
                if name == "admin":
                    page.get_by_role("tab", name="Admin").click()
                    page.click("#admin-refresh")
                    page.wait_for_function("() => document.body.innerText.includes('Q4_K_M')")
                    results["browser_admin"] = page.evaluate("document.body.innerText").count("bereit")
                else:
                    page.fill("#chat-input textarea", "Erkläre mir kurz, was ein Vulkan ist.")
                    page.keyboard.press("Enter")
                    page.wait_for_function(
                        "() => { const b = document.querySelectorAll('#chatbot .bot'); return b.length && b[b.length-1].innerText.trim().length > 0; }"
                    )
                    results["browser_chat"] = True
                    page.get_by_role("tab", name="Dokumente").click()
                    page.set_input_files("#document-upload input[type=file]", str(files["pdf"]))
                    page.click("#document-upload-button")
                    page.wait_for_selector("#upload-result >> text=gespeichert")
                    page.fill("#document-question textarea", "Wo findet die Photosynthese statt?")
                    page.click("#document-ask")
                    page.wait_for_selector("#document-answer >> text=biologie.pdf")
                    results["browser_documents"] = True
                    page.get_by_role("tab", name="Transkription").click()
                    page.set_input_files("#recording input[type=file]", str(files["speech"]))
                    page.click("#transcribe")
                    page.wait_for_selector("#download-srt", state="visible")
                    with page.expect_download() as download:
                        page.click("#download-srt")
                    results["browser_transcript_download"] = Path(download.value.path()).read_text(encoding="utf-8")[:40]
                    page.get_by_role("tab", name="Übersetzen").click()
                    page.fill("#source-text textarea", "Der Hund spielt im Garten.")
                    page.click("#translate")
                    page.wait_for_function("() => document.querySelector('#translation textarea').value.trim().length > 0")
                    results["browser_translate"] = True
                    page.click("#logout")
                    page.wait_for_selector("#password")
                    results["browser_logout"] = True
                context.close()
        finally:
            browser.close()


def stop(up: subprocess.Popen) -> None:
    """SIGTERM to ``schulki up`` itself (strace would only detach on it), then, if anything is left, SIGKILL to the whole session."""
    children = Path(f"/proc/{up.pid}/task/{up.pid}/children")
    for pid in children.read_text().split() if children.exists() else []:
        os.kill(int(pid), signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        up.wait(90)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(up.pid, signal.SIGKILL)
    up.wait()


def main(out: Path) -> int:
    results: dict = {"errors": []}
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    results["interfaces"] = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    work = Path(tempfile.mkdtemp(prefix="schulki-egress-"))
    trace_file = work / "strace.log"
    env = {**os.environ, "SCHULKI_DATA_DIR": str(work / "data"), "PYTHONUNBUFFERED": "1"}
    log = (work / "up.log").open("w")
    # its own session: at the end the whole tree (strace, schulki up, services, gateway) can be stopped as one
    up = subprocess.Popen(
        [
            "strace",
            "-f",
            # stop the traced processes only at the calls traced, not at every call (the inference threads' futex waits)
            "--seccomp-bpf",
            "-qq",
            "-yy",
            "-Y",
            "-e",
            f"trace={TRACED},clone,clone3,execve",
            "-o",
            str(trace_file),
            sys.executable,
            "-m",
            "schulki.cli",
            "up",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    try:
        admin_password = None
        deadline = time.monotonic() + 400
        while admin_password is None or not any("Stop with Ctrl-C" in line for line in output):
            line = up.stdout.readline()
            if not line:
                raise RuntimeError("schulki up ended: " + "".join(output[-20:]))
            output.append(line)
            found = re.search(r"Passwort \(password\): (\S+)", line)
            admin_password = found.group(1) if found else admin_password
            if time.monotonic() > deadline:
                raise TimeoutError("schulki up did not start")
        key = re.search(r"API-Key: (\S+)", "".join(output)).group(1)
        # the address ``schulki up`` printed (http, or https with its own certificate), reached over loopback
        printed = re.search(r"gateway\s+(https?)://[^:/\s]+:(\d+)", "".join(output))
        url = f"{printed.group(1)}://127.0.0.1:{printed.group(2)}"
        added = subprocess.run(
            [sys.executable, "-m", "schulki.cli", "user", "add", "egress-anna", "--role", "student", "--workspace", "7a"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        student = ("egress-anna", re.search(r"Passwort \(password\): (\S+)", added.stdout).group(1))
        speech = work / "stunde.wav"
        subprocess.run(["espeak-ng", "-v", "de", "-s", "140", "-w", str(speech), SPEECH], check=True)
        from tests.gateway_stack import write_pdf

        pdf = write_pdf(work / "biologie.pdf", ["Die Photosynthese findet in den Chloroplasten der Pflanzenzellen statt."])
        drive_api(url, key, speech, results)
        drive_browser(url, admin_password, student, {"pdf": pdf, "speech": speech}, results)
        data = work / "data" / "gateway"
        results["modes"] = {
            p.name: oct(p.stat().st_mode & 0o777) for p in (data, data / "accounts.sqlite3", data / "uploads", data / "secret")
        }
    except Exception:
        results["errors"].append(traceback.format_exc())
    finally:
        stop(up)
        log.close()
    results["up_output"] = "".join(output)[-2000:]
    results["up_log_tail"] = (work / "up.log").read_text(errors="replace")[-3000:]
    results |= judge(trace_file.read_text(errors="replace") if trace_file.exists() else "")
    results["trace_file"] = str(trace_file)
    out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
