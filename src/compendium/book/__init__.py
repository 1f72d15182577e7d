"""Book tooling: claims and verdicts, the chapter report, the runner, the scoreboard."""
