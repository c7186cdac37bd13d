// The `workbook` CLI as a separate process, for tests of what a user sees: exit code, stdout and stderr.
using System.Diagnostics;

namespace Workbook.Tests;

static class CliProcess
{
    public static string Dll => Path.Combine(AppContext.BaseDirectory, "workbook.dll");

    /// <summary>Runs the CLI to the end (failing the test after <paramref name="timeoutMs"/>), with the given
    /// environment variables set (null removes one).</summary>
    public static (int Code, string Out, string Err) Run(
        string[] args,
        IReadOnlyDictionary<string, string?>? env = null,
        int timeoutMs = 60_000
    )
    {
        var psi = new ProcessStartInfo("dotnet", [Dll, .. args])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var (k, v) in env ?? new Dictionary<string, string?>())
            if (v is null)
                psi.Environment.Remove(k);
            else
                psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var o = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(timeoutMs), "the CLI did not finish");
        return (p.ExitCode, o, err.Result);
    }
}
