// num_train_epochs in experiment configs: the stages' epochs become steps once the task is loaded (the dataset size is
// known only then). SFT and base stages count sequences, GRPO counts prompts (per_device_train_batch_size / G).
using Workbook.Data;
using Workbook.Training;

namespace Workbook.Experiments;

public static class EpochResolution
{
    /// <summary>The config with every stage's num_train_epochs turned into max_steps for this task, validated again;
    /// and one log line per resolved stage.</summary>
    public static (ExperimentConfig Config, List<string> Notes) Resolve(ExperimentConfig c, TaskData task)
    {
        var notes = new List<string>();
        T One<T>(string name, T o, int n)
            where T : TrainOptions
        {
            var r = o.WithSteps(n);
            if (o.NumTrainEpochs is { } ep)
                notes.Add(
                    $"{name}.num_train_epochs {ep} over {n} examples, {o.ExamplesPerStep} per step: "
                        + $"max_steps {r.MaxSteps}"
                );
            return r;
        }
        var resolved = c with
        {
            Base = One("base", c.Base, task.Base.Count),
            Sft = One("sft", c.Sft, task.Train.Count),
            Grpo = One("grpo", c.Grpo, task.Train.Count),
        };
        resolved.Validate();
        return (resolved, notes);
    }
}
