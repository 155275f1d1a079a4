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
    /// <summary>
    /// What the app needs and daprd lacks, in words for a log line (names from configuration only); empty when nothing
    /// is. Without the components the app can serve nothing; without the feature no run can settle: readiness fails.
    /// <paramref name="enabledFeatures"/> are daprd's (<see cref="SidecarFeatures"/>), null when unknown: with
    /// <c>Handoff:RunRetention</c> set, a daprd known to lack <see cref="SidecarFeatures.ActorStateTtl"/> would refuse
    /// the save that settles each run.
    /// </summary>
    public static IReadOnlyList<string> MissingForAll(DaprMetadata metadata, HandoffOptions options, IReadOnlyList<string>? enabledFeatures = null)
    {
        var missing = new List<string>();
        if (!metadata.Components.Any(CanHoldActors))
        {
            missing.Add("no state store component that can hold actors (ETag and transactions; marked actorStateStore \"true\")");
        }
        else if (options.RunRetention is not null && ActorStateStoreType(metadata, options.Dapr) is null)
        {
            missing.Add($"several state stores of different types could hold actors, and none is named {options.Dapr.StateStoreName} (Handoff:Dapr:StateStoreName), which Handoff:RunRetention needs to know (stores take a TTL off in different ways): set it to the one marked actorStateStore \"true\"");
        }

        if (!ActorTypeRegistered(metadata))
        {
            missing.Add(ActorTypeNotRegistered);
        }

        if (!Has(metadata, options.Dapr.PubSubName, "pubsub."))
        {
            missing.Add($"no pub/sub component named {options.Dapr.PubSubName} (Handoff:Dapr:PubSubName)");
        }

        if (options.RunRetention is not null && enabledFeatures is not null && !enabledFeatures.Contains(SidecarFeatures.ActorStateTtl, StringComparer.Ordinal))
        {
            missing.Add($"the {SidecarFeatures.ActorStateTtl} feature is off, which Handoff:RunRetention needs (daprd refuses every save of a settled run): turn it on in daprd's Configuration (spec.features, as components/config.yaml and k8s/configuration.yaml do)");
        }

        return missing;
    }

    /// <summary>
    /// The integrations' bindings daprd lacks: only those integrations' launches fail (<c>BindingRefused</c>), so readiness
    /// does not. An integration configured but not deployed (the shipped configuration has two) must not keep pods out of traffic.
    /// </summary>
    public static IReadOnlyList<string> MissingBindings(DaprMetadata metadata, HandoffOptions options) =>
        options.Integrations.OrderBy(entry => entry.Key, StringComparer.Ordinal)
            .Where(entry => entry.Value.Binding is { Length: > 0 } binding && !Has(metadata, binding, "bindings."))
            .Select(entry => $"{entry.Value.Binding} (Handoff:Integrations:{entry.Key}:Binding)")
            .ToList();

    /// <summary>What daprd lacks for a few seconds at every start: it registers the app's actor types once the app answers (its health check, when enabled).</summary>
    public static readonly string ActorTypeNotRegistered =
        $"the {HandoffRunActor.ActorTypeName} actor type is not registered (daprd registers it once the app answers its health check, or its actor runtime is off)";

    private static bool ActorTypeRegistered(DaprMetadata metadata) => metadata.Actors.Any(actor => actor.Type == HandoffRunActor.ActorTypeName);

    /// <summary>
    /// The actor state store's component type, as far as daprd's metadata tells: that of the store named
    /// <c>Handoff:Dapr:StateStoreName</c> when it can hold actors, else the one type of all stores that can; null when
    /// neither tells (stores of several types, or none).
    /// </summary>
    public static string? ActorStateStoreType(DaprMetadata metadata, DaprOptions options)
    {
        var candidates = metadata.Components.Where(CanHoldActors).ToList();
        if (candidates.FirstOrDefault(component => component.Name == options.StateStoreName) is { } named)
        {
            return named.Type;
        }

        var types = candidates.Select(component => component.Type).Distinct(StringComparer.Ordinal).ToList();
        return types.Count == 1 ? types[0] : null;
    }

    private const string ActorCapability = "ACTOR";

    private static bool CanHoldActors(DaprComponentsMetadata component) =>
        component.Type.StartsWith("state.", StringComparison.Ordinal) && component.Capabilities.Contains(ActorCapability);

    private static bool Has(DaprMetadata metadata, string name, string typePrefix) =>
        metadata.Components.Any(component => component.Name == name && component.Type.StartsWith(typePrefix, StringComparison.Ordinal));
}
