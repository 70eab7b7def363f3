"""JVM pieces: finding Java and the jars ``infra/pom.xml`` resolves from Maven Central.

Each pom profile (``kafka``: the broker and its tools; ``spark``: Delta, Kafka and Avro
connectors; ``s3``: hadoop-aws and its AWS SDK bundle) is copied by plain ``mvn`` into
``<home>/jars/<profile>``. A stamp file records the pom's hash, so a second call is
instant and a changed pom re-resolves. Nothing fetches jars at run time: Spark gets
them through ``spark.jars``, the broker through ``java -cp``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from fieldloop.errors import JvmDependencyError
from fieldloop.layout import POM

logger = logging.getLogger(__name__)

PROFILES = ("kafka", "spark", "s3")
MIN_JAVA = 17
_STAMP = ".resolved"


def find_java() -> str:
    """Path of a ``java`` of version 17 or newer.

    Raises:
        JvmDependencyError: no Java, or one that is too old.
    """
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() else shutil.which("java")
    if not java:
        raise JvmDependencyError(
            f"Java {MIN_JAVA}+ not found: install a JDK (apt-get install openjdk-17-jdk-headless) or set JAVA_HOME"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise JvmDependencyError(
            f"{java} is Java {major or '?'}; fieldloop needs Java {MIN_JAVA}+: set JAVA_HOME to a newer JDK"
        )
    return java


def _pom_hash(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def jars(jars_root: Path, profile: str) -> list[Path]:
    """The resolved jars of ``profile``, sorted.

    Raises:
        JvmDependencyError: the profile was never resolved.
    """
    folder = jars_root / profile
    found = sorted(folder.glob("*.jar"))
    if not (folder / _STAMP).exists() or not found:
        raise JvmDependencyError(
            f"the {profile} jars are not in {folder}: run `fieldloop setup` (resolves {POM.name} with mvn)"
        )
    return found


def ensure_jars(jars_root: Path, profile: str, pom: Path = POM) -> list[Path]:
    """Resolve ``profile`` with Maven unless the stamp says it is current; return its jars.

    Raises:
        JvmDependencyError: Maven is missing or the resolution failed.
    """
    if profile not in PROFILES:
        raise JvmDependencyError(f"unknown jar profile '{profile}': one of {', '.join(PROFILES)}")
    folder = jars_root / profile
    stamp = folder / _STAMP
    digest = _pom_hash(pom)
    if stamp.exists() and stamp.read_text().strip() == digest and any(folder.glob("*.jar")):
        return sorted(folder.glob("*.jar"))
    mvn = shutil.which("mvn")
    if not mvn:
        raise JvmDependencyError("Maven (mvn) not found: install it (apt-get install maven) to resolve the JVM jars")
    if folder.exists():
        shutil.rmtree(folder)  # a stale set would mix versions on the classpath
    folder.mkdir(parents=True)
    cmd = [mvn, "-q", "-B", "-f", str(pom), f"-P{profile}", f"-Djars.dir={folder}", "package"]
    logger.info("resolving %s jars with Maven into %s", profile, folder)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise JvmDependencyError(f"mvn could not resolve the {profile} jars (exit {proc.returncode}):\n{tail}")
    if not any(folder.glob("*.jar")):
        raise JvmDependencyError(f"mvn finished but copied no jars into {folder}: check the {profile} profile of {pom}")
    stamp.write_text(digest)
    return sorted(folder.glob("*.jar"))
