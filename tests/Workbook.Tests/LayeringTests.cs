using System.Text.RegularExpressions;

namespace Workbook.Tests;

/// <summary>The core's folders depend one way: Util ← Model, Text, Verifiers ← Data ← Training ← Theory ← Experiments ←
/// Charts ← Reports. A folder may use its own namespace and lower ones only.</summary>
public class LayeringTests
{
    static readonly Dictionary<string, int> Rank = new()
    {
        ["Util"] = 0,
        ["Model"] = 1,
        ["Text"] = 1,
        ["Verifiers"] = 1,
        ["Data"] = 2,
        ["Training"] = 3,
        ["Theory"] = 4,
        ["Experiments"] = 5,
        ["Charts"] = 6,
        ["Reports"] = 7,
    };

    /// <summary>Known upward edges, each a piece of work still open; none since issue 10 moved the HTML reports
    /// (which draw charts) to Reports.</summary>
    static readonly HashSet<(string, string)> Open = [];

    [Fact]
    public void Core_folders_depend_only_on_lower_layers()
    {
        var core = Path.Combine(TestData.RepoRoot, "src", "Workbook.Core");
        var problems = new List<string>();
        foreach (var file in Directory.EnumerateFiles(core, "*.cs", SearchOption.AllDirectories))
        {
            var rel = Path.GetRelativePath(core, file);
            if (rel.StartsWith("bin") || rel.StartsWith("obj") || !rel.Contains(Path.DirectorySeparatorChar))
                continue;
            var folder = rel.Split(Path.DirectorySeparatorChar)[0];
            Assert.True(Rank.ContainsKey(folder), $"{rel}: folder {folder} has no layer in this test");
            var code = string.Join("\n", File.ReadLines(file).Where(l => !l.TrimStart().StartsWith("//")));
            var used = Regex
                .Matches(
                    code,
                    @"\bWorkbook\.(\w+)\b|(?<![\w.])"
                        + @"(Util|Model|Text|Verifiers|Data|Training|Theory|Experiments|Charts|Reports)\.[A-Z]\w*\."
                )
                .Select(m => m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value)
                .Where(Rank.ContainsKey)
                .Distinct();
            foreach (var u in used)
                if (Rank[u] > Rank[folder] || (Rank[u] == Rank[folder] && u != folder))
                    if (!Open.Contains((folder, u)))
                        problems.Add($"{rel} ({folder}) uses {u}");
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public void Tools_are_not_in_the_core()
    {
        var core = Path.Combine(TestData.RepoRoot, "src", "Workbook.Core");
        Assert.False(Directory.Exists(Path.Combine(core, "Bench")), "benchmarks belong in tools/");
        Assert.False(Directory.Exists(Path.Combine(core, "Notebooks")), "the notebook runner belongs in tools/");
    }
}

/// <summary>Lines are at most 120 characters (CSharpier's width). CSharpier cannot break a long string literal, so
/// this test catches those: split them with + (issue 10).</summary>
public class LineLengthTests
{
    [Fact]
    public void No_line_is_longer_than_120_characters()
    {
        var problems = new List<string>();
        foreach (var dir in new[] { "src", "tests", "tools" })
        foreach (
            var file in Directory.EnumerateFiles(
                Path.Combine(TestData.RepoRoot, dir),
                "*.cs",
                SearchOption.AllDirectories
            )
        )
        {
            var rel = Path.GetRelativePath(TestData.RepoRoot, file).Replace('\\', '/');
            if (rel.Contains("/obj/") || rel.Contains("/bin/"))
                continue;
            var lines = File.ReadLines(file).Select((l, i) => (l, i)).Where(p => p.l.Length > 120).ToList();
            if (lines.Count > 0)
                problems.Add($"{rel}: line(s) {string.Join(", ", lines.Select(p => p.i + 1))} over 120 characters");
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }
}
