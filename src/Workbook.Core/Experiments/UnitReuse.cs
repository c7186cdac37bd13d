// Reuse of finished (pipeline, seed) units from earlier runs in the same runs folder (ExperimentRunner.Reuse; on in
// the notebooks, `run --reuse` on the command line). Same seed, same numbers on CPU: with the same config text, seed,
// library build, CPU kind, BLAS path and kernel variables, and no input file named by path, a unit computes what an
// earlier one computed, so that one's result is copied. GPUs never reuse.
//  1. identity: the run's config.json without the seed count and the parallelism (seeds, jobs, resolved_jobs; the
//     torch threads per seed stay in it), and every versions*.json of the run without the fields that cannot change a
//     number (process thread count, allocator and huge-page states); "build" hashes Workbook.Core.dll, so a changed
//     library never matches. Runs written before "build" existed never match, nor runs whose config reads a file by
//     path (a model folder, a CoLA or GSM8K file): its contents are not in config.json.
//  2. a donor is a finished run (summary.json) whose identity is the same and whose unit has done.json in every
//     stage of the plan (its own folder, or the shared sft-then-rl stage it used).
//  3. the unit is copied into a work folder and published with one rename; reused.json in it names the donor. The
//     runner then reads it as it reads a finished stage on resume.
using System.Text.Json.Nodes;

namespace Workbook.Experiments;

public static class UnitReuse
{
    /// <summary>The file a reused unit's folder gets: where it was copied from.</summary>
    public const string Record = "reused.json";

    static readonly string[] ConfigFree = ["seeds", "jobs", "resolved_jobs"];
    static readonly string[] VersionFree = ["threads", "malloc_tuning", "huge_pages"];

    /// <summary>A run folder's identity for reuse (1. above); null when it has no config.json or versions.json, when
    /// they are unreadable, or when its sessions' versions differ.</summary>
    public static string? Identity(string runDir)
    {
        try
        {
            var cfgPath = Path.Combine(runDir, "config.json");
            var versions = Directory.GetFiles(runDir, "versions*.json").Order(StringComparer.Ordinal).ToList();
            if (!File.Exists(cfgPath) || versions.Count == 0)
                return null;
            if (JsonNode.Parse(File.ReadAllText(cfgPath)) is not JsonObject cfg)
                return null;
            if (NamesFiles(cfg))
                return null;
            foreach (var k in ConfigFree)
                cfg.Remove(k);
            string? v = null;
            foreach (var path in versions)
            {
                if (
                    JsonNode.Parse(File.ReadAllText(path)) is not JsonObject o
                    || o["build"]?.GetValue<string>() is null or "unknown"
                    || o["device"]?.GetValue<string>() != "cpu" // the same numbers from the same seed: CPU only
                )
                    return null;
                foreach (var k in VersionFree)
                    o.Remove(k);
                var s = o.ToJsonString();
                if (v is not null && v != s)
                    return null; // resumed under other versions: its units are not one computation
                v = s;
            }
            return cfg.ToJsonString() + "\n" + v;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException)
        {
            return null;
        }
    }

    /// <summary>Why a run can reuse nothing, said in its log (an option is honoured or says why not); null when it
    /// can.</summary>
    public static string? WhyNone(string runDir)
    {
        if (Identity(runDir) is not null)
            return null;
        var cfgPath = Path.Combine(runDir, "config.json");
        if (File.Exists(cfgPath) && JsonNode.Parse(File.ReadAllText(cfgPath)) is JsonObject cfg && NamesFiles(cfg))
            return "the config reads a file by path (model, a cola:/gsm8k: dataset or task.eval_file) whose contents "
                + "config.json does not hold, so every unit trains";
        return "this run's config.json or versions.json cannot identify its computation (no build recorded, or not "
            + "on CPU), so every unit trains";
    }

    /// <summary>Whether the config reads a file by path (model, dataset cola:FILE or gsm8k:FILE, task.eval_file): the
    /// file's contents are not in config.json, so such runs are never reused.</summary>
    static bool NamesFiles(JsonObject cfg) =>
        cfg["model"] is JsonValue
        || (cfg["dataset"] as JsonValue)?.GetValue<string>().Contains(':') == true
        || cfg["task"]?["eval_file"] is JsonValue;

    /// <summary>Finished runs in <paramref name="runsRoot"/> other than <paramref name="runDir"/> with its identity,
    /// newest first.</summary>
    public static List<string> Donors(string runsRoot, string runDir)
    {
        var own = Identity(runDir);
        if (own is null || !Directory.Exists(runsRoot))
            return [];
        var self = Path.GetFullPath(runDir).TrimEnd(Path.DirectorySeparatorChar);
        return Directory
            .GetDirectories(runsRoot)
            .Where(d => !Path.GetFileName(d).StartsWith('.'))
            .Where(d => Path.GetFullPath(d).TrimEnd(Path.DirectorySeparatorChar) != self)
            .Where(d => File.Exists(Path.Combine(d, "summary.json")))
            .OrderByDescending(Path.GetFileName, StringComparer.Ordinal)
            .Where(d => Identity(d) == own)
            .ToList();
    }

    /// <summary>The stage folders of a donor's unit, in plan order (own folder, else the shared stage's), or null
    /// when a stage is not done there.</summary>
    /// <param name="stages">(folder name, shared pipeline or null) per stage of the plan</param>
    public static List<string>? Stages(
        string donor,
        string pipeline,
        long seed,
        IReadOnlyList<(string Folder, string? ShareFrom)> stages
    )
    {
        var found = new List<string>();
        foreach (var (folder, share) in stages)
        {
            var own = Path.Combine(donor, pipeline, $"seed-{seed}", folder);
            var shared = share is null ? null : Path.Combine(donor, share, $"seed-{seed}", folder);
            if (File.Exists(Path.Combine(own, "done.json")))
                found.Add(own);
            else if (shared is not null && File.Exists(Path.Combine(shared, "done.json")))
                found.Add(shared);
            else
                return null;
        }
        return found;
    }

    /// <summary>Copies a donor's unit into <paramref name="seedDir"/> (absent or empty): its stage folders, its own
    /// files (the predictions), and the shared pipeline's prediction files where this run has none. Returns the
    /// donor's unit folder, or null when no donor has the whole unit.</summary>
    public static string? TryCopy(
        IEnumerable<string> donors,
        string runDir,
        string pipeline,
        long seed,
        IReadOnlyList<(string Folder, string? ShareFrom)> stages
    )
    {
        var seedDir = Path.Combine(runDir, pipeline, $"seed-{seed}");
        WorkFolders.RemoveAbandoned(Path.Combine(runDir, pipeline), ".tmp-reuse-*"); // a copy killed midway
        if (Directory.Exists(seedDir) && Directory.EnumerateFileSystemEntries(seedDir).Any())
            return null; // begun here: resume it, never mix
        foreach (var donor in donors)
        {
            if (Stages(donor, pipeline, seed, stages) is not { } found)
                continue;
            var from = Path.Combine(donor, pipeline, $"seed-{seed}");
            var work = Path.Combine(runDir, pipeline, WorkFolders.Name("reuse", seed.ToString()));
            try
            {
                Directory.CreateDirectory(work);
                if (Directory.Exists(from))
                    foreach (var f in Directory.GetFiles(from))
                        File.Copy(f, Path.Combine(work, Path.GetFileName(f)));
                for (int i = 0; i < stages.Count; i++)
                    // a shared stage this run has finished is read from there (ExperimentRunner.RunPipeline): no copy
                    if (
                        stages[i].ShareFrom is not { } share
                        || !File.Exists(Path.Combine(runDir, share, $"seed-{seed}", stages[i].Folder, "done.json"))
                    )
                        CopyTree(found[i], Path.Combine(work, stages[i].Folder));
                File.WriteAllText(
                    Path.Combine(work, Record),
                    new JsonObject { ["from"] = Path.GetFullPath(from), ["stages"] = Array(found) }.ToJsonString()
                );
                if (Directory.Exists(seedDir))
                    Directory.Delete(seedDir); // empty (checked above)
                Directory.Move(work, seedDir);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // a donor deleted or changed midway, a full disk: train instead
                if (Directory.Exists(work))
                    Directory.Delete(work, true);
                continue;
            }
            foreach (var share in stages.Select(s => s.ShareFrom).OfType<string>().Distinct())
            {
                var src = Path.Combine(donor, share, $"seed-{seed}");
                if (!Directory.Exists(src))
                    continue;
                foreach (var f in Directory.GetFiles(src, "prediction-*.json"))
                {
                    var to = Path.Combine(runDir, share, $"seed-{seed}", Path.GetFileName(f));
                    if (!File.Exists(to))
                        AtomicFile.WriteAllText(to, File.ReadAllText(f));
                }
            }
            return from;
        }
        return null;
    }

    static JsonArray Array(IEnumerable<string> paths) =>
        new(paths.Select(p => (JsonNode?)JsonValue.Create(Path.GetFullPath(p))).ToArray());

    /// <summary>Copies the folder <paramref name="from"/> with everything in it to <paramref name="to"/>.</summary>
    public static void CopyTree(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from))
            File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        foreach (var d in Directory.GetDirectories(from))
            CopyTree(d, Path.Combine(to, Path.GetFileName(d)));
    }
}
