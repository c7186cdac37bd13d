// glibc malloc tuning, applied once at startup (NativeSetup's module initializer):
//  0. One arena per core (seeds train on parallel threads).
//  1. Default glibc maps every block above its (dynamic) mmap threshold with mmap and unmaps it on free, so each
//     training step maps, faults in and unmaps its multi-megabyte activation buffers again. Like tuned PyTorch
//     (MALLOC_MMAP_THRESHOLD_/TRIM_THRESHOLD_/TOP_PAD_), the workbook never maps big blocks (M_MMAP_MAX 0: they come
//     from the heap and are reused), never trims the heap top (M_TRIM_THRESHOLD 2 GiB-1) and grows it in 1 GiB steps.
//  2. Large models (>= 100M parameters) keep the older, measured setting instead: blocks above 128 KiB are mapped and
// returned, which keeps RSS flat across steps at a real cost in speed (a 0.6B model's buffers are too big to hoard).
//     Measured on the AVX-512 machine (Qwen3-0.6B, f32, B1xT128): 12.5-14.9 s per step at 11.1 GB peak, against
//     7.4-8.6 s at 12.4 GB when big blocks are kept. WORKBOOK_MALLOC_TUNE=speed keeps them for large models too.
//  3. Off: WORKBOOK_MALLOC_TUNE=0; also left alone when the user sets any MALLOC_*_ variable or GLIBC_TUNABLES. Any
//     other value is a mistake: Problem says so, and the CLI refuses to start.
using System.Runtime.InteropServices;

namespace Workbook;

public static class Memory
{
    const int M_TRIM_THRESHOLD = -1,
        M_TOP_PAD = -2,
        M_MMAP_THRESHOLD = -3,
        M_MMAP_MAX = -4,
        M_ARENA_MAX = -8;
    static bool largeApplied;

    /// <summary>What was applied: "tuned", "tuned (speed: ...)", "large-model", "off (...)", "user (...)" or
    /// "unavailable".</summary>
    public static string State { get; private set; } = "default";

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int mallopt(int param, int value);

    public const string Variable = "WORKBOOK_MALLOC_TUNE";

    /// <summary>WORKBOOK_MALLOC_TUNE when it is none of the understood values (the default then applies).</summary>
    public static string? Problem =>
        Environment.GetEnvironmentVariable(Variable) is { } v && Mode(v) is null
            ? $"{Variable}={v}: expected 0 (off), 1 (the default) or speed (keep big blocks for large models too)"
            : null;

    /// <summary>"off", "default" or "speed"; null for a value that is none of them.</summary>
    public static string? Mode(string? value) =>
        value switch
        {
            null or "" or "1" or "on" or "true" => "default",
            "0" or "off" or "false" => "off",
            "speed" => "speed",
            _ => null,
        };

    /// <summary>Whether a model of this size switches to the large-model setting (item 2 above) under this value of
    /// WORKBOOK_MALLOC_TUNE.</summary>
    public static bool UsesLargeModelSetting(long parameters, string? value) =>
        parameters >= 100_000_000 && Mode(value) is "default" or null;

    static string? UserChoice()
    {
        if (Mode(Environment.GetEnvironmentVariable(Variable)) == "off")
            return "off (WORKBOOK_MALLOC_TUNE=0)";
        foreach (
            var v in new[]
            {
                "MALLOC_MMAP_THRESHOLD_",
                "MALLOC_TRIM_THRESHOLD_",
                "MALLOC_TOP_PAD_",
                "MALLOC_MMAP_MAX_",
                "MALLOC_ARENA_MAX",
                "GLIBC_TUNABLES",
            }
        )
            if (Environment.GetEnvironmentVariable(v) is not null)
                return $"user ({v} is set)";
        return null;
    }

    /// <summary>Startup setting for every model size: keep big blocks (see the top of the file).</summary>
    public static void Tune()
    {
        if (!OperatingSystem.IsLinux())
        {
            State = "unavailable";
            return;
        }
        if (UserChoice() is { } why)
        {
            State = why;
            return;
        }
        try
        {
            // one arena per core: seeds train on parallel threads (run --jobs), and fewer arenas than threads make
            // them wait on malloc's locks; no more than that keeps RSS bounded
            bool ok =
                mallopt(M_ARENA_MAX, Math.Max(2, Environment.ProcessorCount)) == 1
                & mallopt(M_MMAP_MAX, 0) == 1
                & mallopt(M_TRIM_THRESHOLD, int.MaxValue) == 1
                & mallopt(M_TOP_PAD, 1 << 30) == 1;
            State =
                !ok ? "unavailable (mallopt refused)"
                : Mode(Environment.GetEnvironmentVariable(Variable)) == "speed" ? "tuned (speed: large models too)"
                : "tuned";
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            State = "unavailable";
        }
    }

    public static void ForLargeModel(long parameters)
    {
        if (
            largeApplied
            || !UsesLargeModelSetting(parameters, Environment.GetEnvironmentVariable(Variable))
            || !OperatingSystem.IsLinux()
            || UserChoice() is not null
        )
            return;
        try
        {
            mallopt(M_MMAP_MAX, 65536);
            mallopt(M_MMAP_THRESHOLD, 131072);
            mallopt(M_TRIM_THRESHOLD, 131072);
            mallopt(M_TOP_PAD, 0);
            mallopt(M_ARENA_MAX, 2);
            largeApplied = true;
            State = "large-model";
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { } // not glibc
    }
}
