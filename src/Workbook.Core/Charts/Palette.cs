// One series palette for every chart, so a pipeline or seed keeps its colour from chart to chart. Grey is left out:
// the frontier draws controls in grey.
namespace Workbook.Charts;

public static class Palette
{
    static readonly string[] Colours =
    [
        "#1f77b4",
        "#d62728",
        "#2ca02c",
        "#9467bd",
        "#ff7f0e",
        "#8c564b",
        "#e377c2",
        "#17becf",
        "#bcbd22",
        "#393b79",
        "#7b4173",
    ];

    /// <summary>The colour of series <paramref name="i"/> (cycling past the end).</summary>
    public static string At(int i) => Colours[i % Colours.Length];
}
