namespace HandoffDapr.FakeSidecar;

/// <summary>The actor state API calls faults can target.</summary>
public enum ActorStateOperation
{
    /// <summary><c>GET v1.0/actors/{type}/{id}/state/{key}</c>.</summary>
    Get,

    /// <summary><c>PUT v1.0/actors/{type}/{id}/state</c> (every StateManager save).</summary>
    Transaction,
}

/// <summary>An actor state call offered to a fault predicate.</summary>
public sealed record ActorStateCall(ActorStateOperation Operation, string ActorType, string ActorId, IReadOnlyList<string> Keys);

/// <summary>
/// Injected state-store failures. daprd answers a failing store with 500 and
/// <c>ERR_ACTOR_STATE_TRANSACTION_SAVE</c> / <c>ERR_ACTOR_STATE_GET</c> (pkg/api/http/actors.go).
/// </summary>
internal sealed class StateFaults
{
    private readonly object gate = new();
    private readonly List<(Func<ActorStateCall, bool> Predicate, string Message)> rules = new();
    private int failNextTransactions;
    private string nextMessage = "";

    public void FailNextTransactions(int count, string message)
    {
        lock (gate)
        {
            failNextTransactions = count;
            nextMessage = message;
        }
    }

    public IDisposable Add(Func<ActorStateCall, bool> predicate, string message)
    {
        var rule = (predicate, message);
        lock (gate)
        {
            rules.Add(rule);
        }

        return new Removal(() =>
        {
            lock (gate)
            {
                rules.Remove(rule);
            }
        });
    }

    /// <summary>The injected failure message for this call, or null to let it through.</summary>
    public string? Check(ActorStateCall call)
    {
        lock (gate)
        {
            if (call.Operation == ActorStateOperation.Transaction && failNextTransactions > 0)
            {
                failNextTransactions--;
                return nextMessage;
            }

            foreach (var (predicate, message) in rules)
            {
                if (predicate(call))
                {
                    return message;
                }
            }

            return null;
        }
    }

    private sealed class Removal(Action remove) : IDisposable
    {
        private Action? remove = remove;

        public void Dispose() => Interlocked.Exchange(ref remove, null)?.Invoke();
    }
}
