// glibc malloc tuning, applied once at startup (NativeSetup's module initializer):
//  0. One arena per core (seeds train on parallel threads).
//  1. Default glibc maps every block above its (dynamic) mmap threshold with mmap and unmaps it on free, so each
//     training step maps, faults in and unmaps its multi-megabyte activation buffers again. Like tuned PyTorch
//     (MALLOC_MMAP_THRESHOLD_/TRIM_THRESHOLD_/TOP_PAD_), the workbook never maps big blocks (M_MMAP_MAX 0: they come
//     from the heap and are reused), never trims the heap top (M_TRIM_THRESHOLD 2 GiB-1) and grows it in 1 GiB steps.
//  2. Large models (>= 100M parameters) map blocks of 16 MiB and more and return them on free; smaller blocks stay in
//     the heap as above. That keeps a training step's gradients and AdamW's slices (all under 16 MiB but the tied
//     embedding's, at 0.6B scale) in the heap, reused from step to step: on this project's VM, pages mapped afresh
//     cost 0.06-3 s per GiB to fault in (huge pages reused at once; 4 KiB pages), and the step faulted in about 1 s
//     per GB more than with the blocks kept. With 4 MiB the f32 B1xT128 step took 8.1 s (6.2 s with AdamW's
//     2 MiB slices), with 16 MiB 4.6-5.8 s (README, Platform notes). A GRPO trainer lowers the threshold to 4 MiB
//     (ForVariableShapes; the joint trainer too): a bf16 GRPO step at 0.6B peaked at 20.3 GiB with 16 MiB against
//     16.8 GiB with 4 MiB, likely because its rollouts and variable-length updates leave freed blocks that later
//     requests do not fit (not measured), but with about 1.7-2x the update's time (52 against 26-31 s).
//     Keeping every block (as in item 1) gave 20.6 GiB; mapping everything above 128 KiB (the setting until
//     2026-12-04) 15.8 GiB at about twice the time. They also grow the heap 16 MiB at a time and return a free top of
//     more than 64 MiB: glibc serves a request from the heap's free top whenever it fits there, mapping threshold or
//     not, so a 1 GiB top let every step carve its 74 MB logits from fresh pages of it (RSS rose by that much a step
//     until the top was used up). Together with the kept gradient of the 0.6B embedding (Training/AdamW.cs,
//     KeepGradsFrom) this made the 0.6B step's peak unimodal (README, Platform notes).
//  3. Large models also ask libtorch for transparent huge pages (its THP_MEM_ALLOC_ENABLE: buffers of 2 MiB and more
//     get madvise(MADV_HUGEPAGE)), so a fresh gradient faults in 2 MiB at a time instead of 4 KiB: under the 128 KiB
//     setting the same step took 24.1-28.2 s without them, against 13.1-14.0 s with them, at the same peak.
//     libtorch reads the variable once, at its first allocation, so it is set (setenv) when the first large model is
//     built and checked once its parameters exist (/proc/self/smaps): HugePages says whether it took. Small models do
//     without: the small preset's step was 10% slower with them.
//  4. Off: WORKBOOK_MALLOC_TUNE=0 (both). malloc is also left alone when the user sets any MALLOC_*_ variable or
//     GLIBC_TUNABLES, and huge pages when THP_MEM_ALLOC_ENABLE is set (its effect is still checked and recorded).
//     Any other value of WORKBOOK_MALLOC_TUNE is a mistake: Problem says so, and the CLI refuses to start.
using System.Runtime.InteropServices;

namespace Workbook;

public static class Memory
{
    const int M_TRIM_THRESHOLD = -1,
        M_TOP_PAD = -2,
        M_MMAP_THRESHOLD = -3,
        M_MMAP_MAX = -4,
        M_ARENA_MAX = -8;
    static bool largeApplied,
        hugePagesAsked,
        hugePagesChecked;
    static string? userHugePages;

    /// <summary>Models with at least this many parameters get the large-model setting (items 2 and 3 above).
    /// </summary>
    public const long LargeModel = 100_000_000;

    /// <summary>Blocks of this size and more are mapped (and returned on free) under the large-model setting.
    /// </summary>
    public const int LargeModelMmapThreshold = 16 << 20;

    /// <summary>The heap's growth step under the large-model setting (item 2 above).</summary>
    public const int LargeModelTopPad = 16 << 20;

    /// <summary>The free heap top above which glibc returns it to the OS under the large-model setting (item 2).
    /// </summary>
    public const int LargeModelTrimThreshold = 64 << 20;

    const string LargeModelState = "large-model";

    /// <summary>The large-model setting's threshold once a GRPO or joint trainer of a large model exists in the
    /// process (item 2 above).
    /// </summary>
    public const int VariableShapeMmapThreshold = 4 << 20;

    /// <summary>libtorch's own switch for transparent huge pages on its CPU buffers of 2 MiB and more.</summary>
    public const string HugePageVariable = "THP_MEM_ALLOC_ENABLE";

    /// <summary>Transparent huge pages for libtorch's big buffers: "on (...)", "not applied (...)", "off (...)",
    /// "user (...)" (before the check), "not asked (...)" or "unavailable (...)".</summary>
    public static string HugePages { get; private set; } = "not asked (no model of 100M parameters or more yet)";

    /// <summary>What was applied: "tuned", "tuned (speed: ...)", "large-model", "large-model (rollouts: ...)",
    /// "off (...)", "user (...)" or "unavailable".</summary>
    public static string State { get; private set; } = "default";

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int mallopt(int param, int value);

    [DllImport("libc", EntryPoint = "malloc_trim")]
    static extern int malloc_trim(nuint pad);

    [DllImport("libc", EntryPoint = "setenv")]
    static extern int setenv(string name, string value, int overwrite);

    public const string Variable = "WORKBOOK_MALLOC_TUNE";

    /// <summary>glibc's own settings: any of them set leaves malloc as the user configured it.</summary>
    public static readonly string[] UserMallocVariables =
    [
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_TOP_PAD_",
        "MALLOC_MMAP_MAX_",
        "MALLOC_ARENA_MAX",
        "GLIBC_TUNABLES",
    ];

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
        parameters >= LargeModel && Mode(value) is "default" or null;

    static string? UserChoice()
    {
        if (Mode(Environment.GetEnvironmentVariable(Variable)) == "off")
            return "off (WORKBOOK_MALLOC_TUNE=0)";
        foreach (var v in UserMallocVariables)
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

    /// <summary>Called before a model's parameters are allocated: the large-model allocator setting (item 2) and
    /// the request for huge pages (item 3), once per process.</summary>
    public static void ForLargeModel(long parameters)
    {
        if (largeApplied || parameters < LargeModel)
            return;
        largeApplied = true;
        if (!OperatingSystem.IsLinux())
        {
            HugePages = "unavailable (libtorch's THP_MEM_ALLOC_ENABLE is for Linux)";
            return;
        }
        var value = Environment.GetEnvironmentVariable(Variable);
        if (Mode(value) == "off")
        {
            HugePages = "not asked (WORKBOOK_MALLOC_TUNE=0)";
            return;
        }
        // huge pages do not depend on malloc's settings, so a user's MALLOC_*_ variables keep them
        AskForHugePages();
        if (UserChoice() is not null || !UsesLargeModelSetting(parameters, value))
            return;
        try
        {
            // blocks of 16 MiB and more (logits) are mapped and returned; smaller ones, a 0.6B model's layer
            // gradients and AdamW's slices included, stay in the heap as for small models, whose top is kept small
            // so that a big request is not carved from it (see above)
            mallopt(M_MMAP_MAX, 65536);
            mallopt(M_MMAP_THRESHOLD, LargeModelMmapThreshold);
            mallopt(M_TOP_PAD, LargeModelTopPad);
            mallopt(M_TRIM_THRESHOLD, LargeModelTrimThreshold);
            State = LargeModelState;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { } // not glibc
    }

    /// <summary>Called after every training step (the trainers' loop, the training benchmark): for a model of 100M
    /// parameters or more, a gen-0 garbage collection that runs its finalizers. Why: some of TorchSharp's native
    /// objects of a step (its custom autograd functions' nodes, measured by type, not by size) are released only by
    /// their finalizers, and left until a collection happens to run they are small blocks spread through glibc's
    /// heap that keep freed neighbours from joining. Under a gen-0 budget of 512 MiB (no collection in the whole
    /// run) the 0.6B step's peak crept from 10.02 to 10.31 GiB over 11 steps; with this collection it stayed at
    /// 10.02. A step there takes seconds, the collection milliseconds; small models skip it (their steps are short
    /// and their heaps small). Not tied to the allocator setting: it runs with WORKBOOK_MALLOC_TUNE=0 too.</summary>
    public static void AfterTrainingStep(long parameters)
    {
        if (parameters >= LargeModel)
            CollectFinalized();
    }

    static void CollectFinalized()
    {
        GC.Collect(0, GCCollectionMode.Forced, blocking: true);
        GC.WaitForPendingFinalizers();
    }

    /// <summary>Called before a trainer's evaluation, once the step's gradients are dropped (TrainerBase.Evaluate):
    /// for a model of 100M parameters or more, a gen-0 collection with its finalizers (as
    /// <see cref="AfterTrainingStep"/>) and then the heap's free pages returned to the OS (malloc_trim), so that the
    /// freed gradients' blocks (about 2 GB at 0.6B in float32) are not resident while the evaluation allocates its own.
    /// Measured together with the drop, at 0.6B: RSS at an evaluation's start fell from 9.49 to 7.68 GiB (one run; the
    /// trim alone, with the gradients still held, only from 9.51 to 9.36). The next step faults the gradients' pages
    /// in again. With WORKBOOK_MALLOC_TUNE=0 or the user's MALLOC_* settings only the collection runs.</summary>
    public static void BeforeEvaluation(long parameters)
    {
        if (parameters < LargeModel)
            return;
        CollectFinalized();
        if (!State.StartsWith(LargeModelState))
            return;
        try
        {
            malloc_trim(0);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { } // not glibc
    }

    /// <summary>Called by the trainers that generate rollouts (GRPO, joint) with their model's size: under the
    /// large-model setting, blocks of 4 MiB and more are mapped from now on, for the rest of the process (item 2
    /// above), and the heap's free memory (an SFT stage's freed gradients, say) is returned to the OS first.</summary>
    public static void ForVariableShapes(long parameters)
    {
        if (parameters < LargeModel || State != LargeModelState)
            return;
        try
        {
            malloc_trim(0);
            if (mallopt(M_MMAP_THRESHOLD, VariableShapeMmapThreshold) == 1)
                State = "large-model (rollouts: blocks of 4 MiB and more mapped)";
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { } // not glibc
    }

    /// <summary>Why huge pages are not asked for, given THP_MEM_ALLOC_ENABLE as the user set it and the kernel's
    /// mode; null: ask.</summary>
    public static string? HugePagesNotAsked(string? userValue, string? kernelMode) =>
        userValue is not null ? $"user ({HugePageVariable}={userValue})"
        : kernelMode is "never" ? "off (the kernel's transparent_hugepage/enabled is never)"
        : kernelMode is null ? "off (no /sys/kernel/mm/transparent_hugepage/enabled: no huge pages to ask for)"
        : null;

    static void AskForHugePages()
    {
        var user = Environment.GetEnvironmentVariable(HugePageVariable);
        if (HugePagesNotAsked(user, KernelHugePageMode()) is { } why)
        {
            HugePages = why;
            // the user's own value is checked like the workbook's: CheckHugePages says what it did
            userHugePages = user;
            return;
        }
        try
        {
            // libtorch reads it at its first allocation in the process; CheckHugePages says whether that was later.
            // Called once per process: glibc's first setenv copies environ and frees nothing a getenv might read.
            hugePagesAsked = setenv(HugePageVariable, "1", 0) == 0;
            HugePages = hugePagesAsked ? "asked" : "not applied (setenv failed)";
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            HugePages = "not applied (no setenv)";
        }
    }

    /// <summary>Called once a large model's parameters exist: whether libtorch advised huge pages for them.</summary>
    public static void CheckHugePages()
    {
        if (!(hugePagesAsked || userHugePages is not null) || hugePagesChecked)
            return;
        hugePagesChecked = true;
        string smaps;
        try
        {
            smaps = File.ReadAllText("/proc/self/smaps");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            HugePages = "unknown (/proc/self/smaps unreadable)";
            return;
        }
        bool advised = AdvisedHugePageBytes(smaps) > 0;
        HugePages =
            userHugePages is { } v ? $"{(advised ? "on" : "off")} (the user's {HugePageVariable}={v})"
            : advised ? $"on (libtorch's buffers of 2 MiB and more; {HugePageVariable}=0 turns it off)"
            : "not applied (libtorch had allocated before the first large model was built; "
                + $"set {HugePageVariable}=1 before the process starts)";
    }

    /// <summary>Bytes of the mappings in a /proc/PID/smaps text that carry madvise(MADV_HUGEPAGE) (VmFlags hg).
    /// </summary>
    public static long AdvisedHugePageBytes(string smaps)
    {
        long total = 0,
            size = 0;
        foreach (var raw in smaps.Split('\n'))
        {
            var line = raw.TrimEnd();
            if (line.StartsWith("Size:", StringComparison.Ordinal))
                size = long.Parse(line[5..].Trim().Split(' ')[0]) * 1024;
            else if (line.StartsWith("VmFlags:", StringComparison.Ordinal) && line[8..].Split(' ').Contains("hg"))
                total += size;
        }
        return total;
    }

    /// <summary>"always", "madvise" or "never" (the bracketed choice), or null where the file is missing.</summary>
    static string? KernelHugePageMode()
    {
        try
        {
            var text = File.ReadAllText("/sys/kernel/mm/transparent_hugepage/enabled");
            int a = text.IndexOf('['),
                b = text.IndexOf(']');
            return a >= 0 && b > a ? text[(a + 1)..b] : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
