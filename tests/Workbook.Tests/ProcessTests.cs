using System.Diagnostics;
using Workbook.Training;

namespace Workbook.Tests;

/// <summary>The CLI as a separate process: a training run killed with SIGKILL and resumed logs exactly what an
/// uninterrupted run logs.</summary>
public class ProcessTests
{
    static string Cli => Path.Combine(AppContext.BaseDirectory, "workbook.dll");

    static Process Start(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet", [Cli, .. args])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    static string[] Train(string dir, bool resume) =>
        [
            "train",
            "sft",
            "--preset",
            "tiny",
            "--train-size",
            "300",
            resume ? "--resume" : "--run-dir",
            dir,
            "--set",
            "max_steps=40",
            "--set",
            "save_steps=5",
            "--set",
            "per_device_train_batch_size=8",
            "--set",
            "learning_rate=1e-3",
            "--set",
            "seed=3",
        ];

    static List<Dictionary<string, double>> Metrics(string dir) => TrainerRuns.Comparable(dir);

    [Fact]
    public void Every_verb_prints_its_help()
    {
        // an option description is Spectre markup: a stray [..] once made `report --help` throw
        string[] verbs =
        [
            "run",
            "sweep",
            "train",
            "notebooks",
            "report",
            "export-recipe",
            "score",
            "generate",
            "tokenize",
            "verify",
            "landscape",
            "bench",
            "info",
        ];
        foreach (var verb in verbs)
        {
            var psi = new ProcessStartInfo("dotnet", [Cli, verb, "--help"])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            using var p = Process.Start(psi)!;
            var err = p.StandardError.ReadToEndAsync();
            var output = p.StandardOutput.ReadToEnd();
            Assert.True(p.WaitForExit(60_000), $"{verb} --help did not exit");
            Assert.True(p.ExitCode == 0, $"{verb} --help exited {p.ExitCode}: {err.Result}{output}");
            Assert.Contains("USAGE", output);
            Assert.DoesNotContain("Exception", output + err.Result);
        }
    }

    [Fact]
    public void A_training_run_killed_with_sigkill_and_resumed_matches_an_uninterrupted_run()
    {
        Assert.True(File.Exists(Cli), $"{Cli} missing: the test project references the CLI");
        var root = TestData.TempDir();
        string full = Path.Combine(root, "full"),
            killed = Path.Combine(root, "killed");
        using (var p = Start(Train(full, false)))
        {
            Assert.True(p.WaitForExit(300_000));
            Assert.Equal(0, p.ExitCode);
        }

        using (var p = Start(Train(killed, false)))
        {
            var sw = Stopwatch.StartNew();
            while (
                TrainerCheckpoint.Latest(killed) is not { } c
                || string.CompareOrdinal(Path.GetFileName(c), "step-000010") < 0
            )
            {
                Assert.False(p.HasExited, "the run finished before it could be killed");
                Assert.True(sw.Elapsed.TotalSeconds < 300, "no checkpoint appeared");
                Thread.Sleep(20);
            }
            p.Kill(); // SIGKILL on Linux: no cleanup runs in the child
            p.WaitForExit();
        }
        var lastBefore = Path.GetFileName(TrainerCheckpoint.Latest(killed));
        Assert.True(Metrics(killed).Count < Metrics(full).Count, "the kill came too late to test anything");
        using (var p = Start(Train(killed, true)))
        {
            Assert.True(p.WaitForExit(300_000));
            Assert.Equal(0, p.ExitCode);
        }

        var a = Metrics(full);
        var b = Metrics(killed);
        Assert.Equal(a.Count, b.Count);
        for (int i = 0; i < a.Count; i++)
            foreach (var k in a[i].Keys)
                Assert.True(
                    b[i].TryGetValue(k, out var v) && v == a[i][k],
                    $"line {i} {k}: {a[i][k]} vs {(b[i].TryGetValue(k, out var w) ? w : double.NaN)} (killed "
                        + $"after {lastBefore})"
                );
    }
}
