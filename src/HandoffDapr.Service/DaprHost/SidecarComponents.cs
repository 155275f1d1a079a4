using Dapr.Client;
using HandoffDapr.Service.Configuration;

namespace HandoffDapr.Service.DaprHost;

/// <summary>
/// What the app needs daprd to have loaded, read from daprd's metadata: a state store that can hold actors, the run
/// actor's type registered (once daprd has read the app's <c>dapr/config</c>), the pub/sub component completion events
/// arrive on, and each integration's output binding. daprd starts without any of them when they are misnamed or not
/// deployed; the app would then take calls it can only fail. The metadata does not say which store is the actor state
/// store (the one with <c>actorStateStore: "true"</c>), only which could be: daprd's <c>ACTOR</c> capability, given to a
/// store with ETag and transactions.
/// </summary>
public static class SidecarComponents
{
    /// <summary>What is missing, in words for a log line (names from configuration only); empty when nothing is.</summary>
    public static IReadOnlyList<string> Missing(DaprMetadata metadata, HandoffOptions options)
    {
        var missing = new List<string>();
        if (!metadata.Components.Any(component => component.Type.StartsWith("state.", StringComparison.Ordinal) && component.Capabilities.Contains(ActorCapability)))
        {
            missing.Add("no state store component that can hold actors (ETag and transactions; marked actorStateStore \"true\")");
        }

        if (!metadata.Actors.Any(actor => actor.Type == HandoffRunActor.ActorTypeName))
        {
            missing.Add($"the {HandoffRunActor.ActorTypeName} actor type is not registered (daprd has not read the app's dapr/config yet, or its actor runtime is off)");
        }

        if (!Has(metadata, options.Dapr.PubSubName, "pubsub."))
        {
            missing.Add($"no pub/sub component named {options.Dapr.PubSubName} (Handoff:Dapr:PubSubName)");
        }

        foreach (var (id, integration) in options.Integrations.OrderBy(entry => entry.Key, StringComparer.Ordinal))
        {
            if (integration.Binding is { Length: > 0 } binding && !Has(metadata, binding, "bindings."))
            {
                missing.Add($"no binding component named {binding} (Handoff:Integrations:{id}:Binding)");
            }
        }

        return missing;
    }

    private const string ActorCapability = "ACTOR";

    private static bool Has(DaprMetadata metadata, string name, string typePrefix) =>
        metadata.Components.Any(component => component.Name == name && component.Type.StartsWith(typePrefix, StringComparison.Ordinal));
}
