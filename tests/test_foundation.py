"""The foundation: the command line, the bundled database, the hash path."""

from __future__ import annotations

from conftest import (
    CLAM_TEST_FILE_SIG,
    TESTFILES,
    clammail_cli,
    clammail_results,
    clamscan_results,
)


def test_clam_exe_found_by_sha256_in_hdb(sigdir):
    (sigdir / "test.hdb").write_text(CLAM_TEST_FILE_SIG + "\n")
    code, results, _ = clammail_results([sigdir / "test.hdb"], [TESTFILES / "clam.exe"])
    assert results == {str(TESTFILES / "clam.exe"): ["ClamAV-Test-File.UNOFFICIAL"]}
    assert code == 1


def test_same_answer_as_clamscan_on_clam_exe(sigdir):
    (sigdir / "test.hdb").write_text(CLAM_TEST_FILE_SIG + "\n")
    target = [TESTFILES / "clam.exe"]
    assert clammail_results([sigdir / "test.hdb"], target)[:2] == clamscan_results(
        [sigdir / "test.hdb"], target
    )[:2]


def test_clean_file_is_ok_and_exit_zero(sigdir, tmp_path):
    (sigdir / "test.hdb").write_text(CLAM_TEST_FILE_SIG + "\n")
    clean = tmp_path / "clean.txt"
    clean.write_text("nothing to see\n")
    code, results, _ = clammail_results([sigdir / "test.hdb"], [clean])
    assert (code, results) == (0, {str(clean): []})


def test_bundled_database_detects_eicar(tmp_path):
    eicar = tmp_path / "eicar.com"
    eicar.write_bytes(rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")
    from clammail.scancmd import BUNDLED_DATABASE

    for allmatch in (False, True):
        ours = clammail_results([BUNDLED_DATABASE], [eicar], allmatch=allmatch)
        theirs = clamscan_results([BUNDLED_DATABASE], [eicar], allmatch=allmatch)
        assert ours[:2] == theirs[:2]
        assert ours[0] == 1


def test_unknown_command_exits_2():
    proc = clammail_cli("no-such-command")
    assert proc.returncode == 2
    assert "unknown command" in proc.stderr


def test_bare_switch_does_not_swallow_the_path(sigdir):
    (sigdir / "test.hdb").write_text(CLAM_TEST_FILE_SIG + "\n")
    code, results, _ = clammail_results(
        [sigdir / "test.hdb"], ["--disable-cache", TESTFILES / "clam.exe"]
    )
    assert results == {str(TESTFILES / "clam.exe"): ["ClamAV-Test-File.UNOFFICIAL"]}


def test_directory_output_lines_are_clamscans(sigdir, tmp_path):
    """A directory: its entries in readdir order, symbolic links inside it named and not
    followed, a subdirectory left alone without -r; the same lines with -i and -o."""
    import subprocess
    import sys

    from conftest import REPO, need_program

    (sigdir / "test.hdb").write_text(CLAM_TEST_FILE_SIG + "\n")
    folder = tmp_path / "dir"
    (folder / "sub").mkdir(parents=True)
    (folder / "clean.txt").write_text("nothing to see\n")
    (folder / "clam.exe").write_bytes((TESTFILES / "clam.exe").read_bytes())
    (folder / "link.exe").symlink_to(TESTFILES / "clam.exe")
    (folder / "dirlink").symlink_to(folder / "sub")
    (folder / "broken").symlink_to(tmp_path / "missing")
    for extra in ([], ["-i"], ["-o"], ["-r"]):
        common = ["--no-summary", "-d", str(sigdir / "test.hdb"), *extra, str(folder)]
        theirs = subprocess.run([need_program("clamscan"), *common], capture_output=True,
                                text=True, timeout=600)
        ours = subprocess.run([sys.executable, "-m", "clammail", "scan", "--no-progress",
                               *common], capture_output=True, text=True, timeout=600, cwd=REPO)
        assert ours.stdout == theirs.stdout
        assert ours.returncode == theirs.returncode == 1
    assert "link.exe: Symbolic link" in theirs.stdout
