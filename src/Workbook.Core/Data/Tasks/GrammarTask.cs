// The embedded CoLA-like acceptability task, generated from a small grammar (deterministic by seed).
// - Acceptable sentences: determiner + noun (singular/plural) + agreeing verb (+ object for transitive verbs) +
// optional    adjunct. Unacceptable ones carry exactly one error: subject-verb agreement, word order, or argument
// structure    (an object after an intransitive verb, or none after a transitive one). Half the rows are acceptable.
//  - The expert (SFT) response is a one-line rationale that names the words involved, then the label. Most end with the
//    strict line "Answer: acceptable|unacceptable"; a fraction (LooseFormatFraction) say it in natural words instead.
//  - The RL reward is the strict verifier (final line exact and correct); evaluation also reports the lenient one.
// Why the effects appear: RL's reward prefers one of the forms the expert data mixes (strict line vs natural wording)
// and does not care about the rationale's wording, so RL moves mass away from expert responses (SFT loss rises); SFT
// after RL pulls the policy back towards the mixed forms (strict reward falls). With LooseFormatFraction = 0 the format
// part of both effects disappears and what remains is sharpening of the rationale distribution.
using Workbook.Text;
using Workbook.Verifiers;

namespace Workbook.Data;

public static class GrammarTask
{
    record Noun(string Sg, string Pl);

    record Verb(string Sg, string Pl, bool Transitive);

    static readonly Noun[] Nouns =
    [
        new("cat", "cats"),
        new("dog", "dogs"),
        new("bird", "birds"),
        new("child", "children"),
        new("teacher", "teachers"),
        new("farmer", "farmers"),
        new("horse", "horses"),
        new("girl", "girls"),
        new("boy", "boys"),
        new("fox", "foxes"),
    ];
    static readonly Verb[] Verbs =
    [
        new("sleeps", "sleep", false),
        new("runs", "run", false),
        new("laughs", "laugh", false),
        new("sings", "sing", false),
        new("sees", "see", true),
        new("likes", "like", true),
        new("chases", "chase", true),
        new("helps", "help", true),
        new("finds", "find", true),
    ];
    static readonly string[] Dets = ["the", "a", "my", "this", "every"];
    static readonly string[] PluralDets = ["the", "my", "these", "two", "some"];
    static readonly string[] Adjuncts = ["", "", "", " today", " again", " in the park", " at night"];

    public const string Question = "Is this sentence grammatical?";

    public static TaskData Create(int seed, TaskOptions o)
    {
        o.Validate();
        var rng = new Random(seed * 7919 + 17);
        // the expert response's form is drawn from its own stream, so that every loose_format_fraction (and the task's
        // reward) gives the same sentences, labels, rationales and terse answers: controls differ in the form only
        var formRng = new Random(seed * 7919 + 29);
        var all = DistinctRows.Draw(
            "grammar",
            o.TrainSize + o.EvalSize,
            count =>
            {
                var (sentence, ok, rationale) = Sentence(rng, acceptable: count % 2 == 0);
                return (
                    sentence,
                    () =>
                    {
                        var label = ok ? "acceptable" : "unacceptable";
                        var prompt = new List<ChatMessage> { ChatMessage.User($"{Question} \"{sentence}\"") };
                        bool loose = formRng.NextDouble() < o.LooseFormatFraction;
                        int wording = formRng.Next(3);
                        var answer = loose ? LooseAnswer(wording, label) : $"Answer: {label}";
                        var expert = o.Rationales
                            ? (loose ? $"{rationale} {answer}" : $"{rationale}\n{answer}")
                            : answer;
                        var terse = TerseAnswer(rng, label);
                        var ex = new Example(prompt, expert, label, "grammar")
                        {
                            Form = loose ? "loose" : "strict",
                            AnswerStart = expert.Length - answer.Length,
                        };
                        return (ex, new Example(prompt, terse, label, "grammar"));
                    }
                );
            }
        );
        var forms = new[] { "acceptable", "unacceptable" }
            .SelectMany(l => Enumerable.Range(0, 3).Select(w => $" {LooseAnswer(w, l)}").Append($"\nAnswer: {l}"))
            .ToList();
        var train = all.Take(o.TrainSize).ToList();
        var eval = all.Skip(o.TrainSize).Take(o.EvalSize).ToList();
        return new TaskData(
            "grammar",
            train.Select(t => t.Expert).ToList(),
            eval.Select(t => t.Expert).ToList(),
            train.Select(t => t.Terse).ToList(),
            new LabelVerifier(strict: true),
            [new LabelVerifier(strict: true), new LabelVerifier(strict: false)],
            $"Embedded acceptability task (grammar with agreement, word-order and argument-structure errors). "
                + $"Expert responses: {(o.Rationales ? "a one-line rationale, then " : "")}the label; "
                + $"{o.LooseFormatFraction:P0} state it in natural words, the rest end with the strict line "
                + "'Answer: acceptable|unacceptable'. RL reward: strict final line, correct label. The strict reward "
                + "prefers one of the forms the expert data mixes and ignores the rationale's wording: the design "
                + "expects RL to raise the SFT loss and SFT after RL to lower the strict reward through that "
                + "preference; the results below test whether they do (prediction, controls, where the rise sits)."
        )
        {
            ExtraVocabularyText = forms,
            HeldOutBase = eval.Select(t => t.Terse).ToList(),
        };
    }

    static string LooseAnswer(int wording, string label) =>
        wording switch
        {
            0 => $"So it is {label}.",
            1 => $"The sentence is {label}.",
            _ => $"I would call it {label}.",
        };

    static string TerseAnswer(Random r, string label) =>
        r.Next(3) switch
        {
            0 => $"Answer: {label}",
            1 => label,
            _ => $"It is {label}.",
        };

    static (string sentence, bool ok, string rationale) Sentence(Random r, bool acceptable)
    {
        var n = Nouns[r.Next(Nouns.Length)];
        bool plural = r.Next(2) == 0;
        var det = plural ? PluralDets[r.Next(PluralDets.Length)] : Dets[r.Next(Dets.Length)];
        var subj = $"{det} {(plural ? n.Pl : n.Sg)}";
        var v = Verbs[r.Next(Verbs.Length)];
        var o = Nouns[r.Next(Nouns.Length)];
        var obj = $"the {(r.Next(2) == 0 ? o.Sg : o.Pl)}";
        var adj = Adjuncts[r.Next(Adjuncts.Length)];
        var verb = plural ? v.Pl : v.Sg;
        string Cap(string s) => char.ToUpperInvariant(s[0]) + s[1..];
        if (acceptable)
        {
            var s = v.Transitive ? $"{subj} {verb} {obj}{adj}" : $"{subj} {verb}{adj}";
            var why =
                r.Next(2) == 0
                    ? $"'{verb}' agrees with '{subj}'."
                    : $"The word order is normal and '{verb}' has what it needs.";
            return (Cap(s) + ".", true, why);
        }
        switch (r.Next(3))
        {
            case 0: // agreement
                var wrong = plural ? v.Sg : v.Pl;
                var s0 = v.Transitive ? $"{subj} {wrong} {obj}{adj}" : $"{subj} {wrong}{adj}";
                return (Cap(s0) + ".", false, $"'{wrong}' does not agree with '{subj}'.");
            case 1: // word order
                var s1 = v.Transitive ? $"{subj} {obj} {verb}{adj}" : $"{verb} {subj}{adj}";
                return (Cap(s1) + ".", false, $"'{verb}' is in the wrong place.");
            default: // argument structure
                var s2 = v.Transitive ? $"{subj} {verb}{adj}" : $"{subj} {verb} {obj}{adj}";
                return (
                    Cap(s2) + ".",
                    false,
                    v.Transitive ? $"'{verb}' needs an object." : $"'{verb}' cannot take an object."
                );
        }
    }
}
