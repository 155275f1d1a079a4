using System.Text.Json;
using System.Text.Json.Serialization;
using Dapr.Actors;
using Dapr.Actors.Runtime;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Serialization;
using HandoffDapr.Service.Api;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Embedded;
using HandoffDapr.Service.Hosting;
using HandoffDapr.Service.Security;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Extensions;

/// <summary>Registration for the whole service, by area. <c>Program.cs</c> calls these two methods and nothing else.</summary>
public static class HandoffServiceExtensions
{
    public static WebApplicationBuilder AddHandoffServices(this WebApplicationBuilder builder)
    {
        var services = builder.Services;
        var mode = HostingModes.Resolve(builder.Configuration);
        builder.AddHandoffTelemetry();
        services.AddHandoffOpenApi();
        services.AddSingleton(new HostingContext(mode));
        services.AddSingleton<RequestDrain>();
        // Both modes: embedded mode's one call at a time per run; in Dapr mode the actor's own turn per run (HandoffRunActor.Guarded).
        services.AddSingleton<RunLocks>();
        services.AddHostedService(sp => sp.GetRequiredService<RequestDrain>());
        services.AddSingleton(sp => new ProviderCallCutoff(
            sp.GetRequiredService<IHostApplicationLifetime>(),
            sp.GetRequiredService<IOptions<HandoffOptions>>().Value.ProviderCallGraceIn(mode),
            sp.GetRequiredService<TimeProvider>()));

        services.AddOptions<HandoffOptions>().BindConfiguration(HandoffOptions.SectionName).ValidateOnStart();
        services.AddSingleton<IValidateOptions<HandoffOptions>>(new HandoffOptionsValidator(mode, builder.Configuration));
        services.AddOptions<KestrelServerOptions>().Configure<IOptions<HandoffOptions>>((kestrel, handoff) =>
            kestrel.Limits.MaxRequestBodySize = handoff.Value.MaxRequestBodyBytes);

        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<HandoffOptions>>().Value.Launch.ToEngineOptions());
        services.AddSingleton(sp => new RetryPolicy(sp.GetRequiredService<HandoffEngineOptions>().Retry, Random.Shared.NextDouble));
        services.AddSingleton<HandoffEngine>();
        services.AddSingleton<IIntegrationCatalog>(sp => new IntegrationCatalog(sp.GetRequiredService<IOptions<HandoffOptions>>(), mode, sp));

        services.AddCallerAuthorization(builder.Configuration, mode);
        services.AddHandoffRateLimits();
        services.AddProblemDetails();
        services.ConfigureHttpJsonOptions(options => ServiceJsonContext.ConfigureHttp(options.SerializerOptions));
        var health = services.AddHealthChecks();

        if (mode == HostingMode.Dapr)
        {
            AddDaprHost(services);
            services.AddSingleton<SidecarFeatures>();
            services.AddSingleton<ActorStateTtl>();
            // One instance (AddCheck takes the registered service): it logs why the app is not ready when that changes, not
            // at every probe.
            services.AddSingleton<SidecarReadinessCheck>();
            health.AddCheck<SidecarReadinessCheck>("dapr-sidecar", tags: [HealthEndpoints.ReadinessTag]);
        }
        else
        {
            AddEmbeddedHost(services);
            health.AddCheck<SqliteReadinessCheck>("sqlite", tags: [HealthEndpoints.ReadinessTag]);
        }

        return builder;
    }

    /// <summary>
    /// The largest actor call daprd may bring in. A call carries the run as this app's serializer writes it, and that
    /// escapes what daprd's JSON writes as one byte (an apostrophe, a plus sign) in six (<c>\u0027</c>), and a non-ASCII
    /// character in six or twelve: a completion event within <see cref="HandoffOptions.MaxRequestBodyBytes"/> can make a
    /// larger call, which Kestrel's limit for every other route would refuse (the event would be redelivered, and
    /// refused again, until dead-lettered). Six times the event's limit, and room for what a round adds to the run.
    /// </summary>
    internal static long ActorCallBodyLimit(HandoffOptions options) => (options.MaxRequestBodyBytes * 6) + (1024 * 1024);

    public static WebApplication MapHandoff(this WebApplication app)
    {
        var mode = app.Services.GetRequiredService<HostingContext>().Mode;
        app.UseExceptionHandler();
        // Before the drain: the 503 it writes by hand once shutdown is over carries the headers too.
        app.UseSecurityHeaders();
        app.UseRequestDrain();

        app.UseStatusCodePages(Problems.WriteForBareStatus);
        app.UseAuthentication();
        app.UseAuthorization();
        if (mode == HostingMode.Dapr)
        {
            // No UseCloudEvents: the event endpoint unwraps a structured CloudEvent itself, and the middleware would parse
            // every request's body first, the open webhook route's included, answering malformed JSON with a 500.
            app.MapSubscribeHandler().RequireAuthorization(CallerAuthorization.Policy);
            var sidecarStarts = app.Services.GetRequiredService<SidecarStarts>();
            var actorCallBodyLimit = ActorCallBodyLimit(app.Services.GetRequiredService<IOptions<HandoffOptions>>().Value);
            var actorCallArguments = new ActorCallArguments(app.Services.GetRequiredService<IOptions<ActorRuntimeOptions>>().Value.JsonSerializerOptions);
            app.MapActorsHandlers().RequireAuthorization(CallerAuthorization.Policy)
                .WithMetadata(new Microsoft.AspNetCore.Mvc.RequestSizeLimitAttribute(actorCallBodyLimit))
                .Add(endpoint =>
                {
                    // The SDK maps a /healthz of its own (order 100, behind ours), for every method, open to anyone and
                    // running every health check, the sidecar's readiness included: a DELETE or POST reached it and was
                    // answered 200. Limited to the probe's methods, which ours answers first, any other is a 405.
                    if (endpoint is RouteEndpointBuilder { RoutePattern.RawText: HealthEndpoints.LivenessPath })
                    {
                        endpoint.Metadata.Add(HealthEndpoints.ProbeMethods);
                    }

                    // A call the app cannot take (a body not of the method's parameter, no such method or actor type) is a
                    // 4xx problem, not the 500 the SDK's exception would be.
                    if (endpoint is RouteEndpointBuilder { RoutePattern.RawText: { } pattern } && pattern.StartsWith("actors/", StringComparison.Ordinal)
                        && endpoint.RequestDelegate is { } actorCall)
                    {
                        endpoint.RequestDelegate = context => ActorCallRefusals.InvokeAsync(context, actorCall, actorCallBodyLimit, actorCallArguments);
                    }

                    // daprd reads its actor settings once, as it starts: a start, for the actors held from before it.
                    if (endpoint is RouteEndpointBuilder { RoutePattern.RawText: "dapr/config" } && endpoint.RequestDelegate is { } config)
                    {
                        endpoint.RequestDelegate = context =>
                        {
                            sidecarStarts.Seen();
                            return config(context);
                        };
                    }
                });
        }

        if (app.Environment.IsDevelopment())
        {
            // The one document by its path: the default pattern answers any other name with a plain-text 404 of its own.
            app.MapOpenApi("/openapi/v1.json");
        }

        // The status page itself is static; the data it reads (/runs) is behind the caller check.
        app.UseStaticFiles();
        // HEAD too (RFC 9110 §9.1), as the page's files and the reads answer it: a link checker or `curl -I` got a 405.
        app.MapMethods("/ui", [HttpMethods.Get, HttpMethods.Head], () => Results.Redirect("/ui/index.html")).ExcludeFromDescription();

        // Open: health (probes) and provider webhooks (authenticated by their signature).
        app.MapHealthEndpoints();
        app.MapWebhookEndpoints();

        var api = app.MapGroup(string.Empty).RequireAuthorization(CallerAuthorization.Policy)
            .ProducesProblem(StatusCodes.Status401Unauthorized)
            .ProducesProblem(StatusCodes.Status403Forbidden);
        api.MapHandoffEndpoints();
        api.MapAgentEndpoints();
        api.MapCompletionEventEndpoints(mode, app.Services.GetRequiredService<IOptions<HandoffOptions>>().Value.Dapr);
        app.LogHostingMode();
        app.LogCallerCheck();
        if (mode == HostingMode.Embedded)
        {
            // Open the data file now, not first in the host's start: a path that cannot be used is then refused by
            // Program as the bad setting it is, on one line, rather than also logged by the host's failed start with a
            // stack trace ("Hosting failed to start").
            app.Services.GetRequiredService<SqliteRunStore>();
        }

        return app;
    }

    private static void AddEmbeddedHost(IServiceCollection services)
    {
        services.AddSingleton(sp =>
        {
            var options = sp.GetRequiredService<IOptions<HandoffOptions>>().Value;
            return new SqliteRunStore(options.DataPath, sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<SqliteRunStore>>(), options.Embedded.RememberedEvents);
        });
        services.TryAddSingleton<WakeupSignal>();
        services.AddSingleton<Transport.ProviderHttpClients>();
        services.AddSingleton<EmbeddedRunOwner>();
        services.AddSingleton<IRunOwner>(sp => sp.GetRequiredService<EmbeddedRunOwner>());
        services.AddSingleton<IRecentRuns, SqliteRecentRuns>();
        services.AddSingleton<WakeupScheduler>();
        services.AddHostedService(sp => sp.GetRequiredService<WakeupScheduler>());
        services.AddSingleton<RetentionSweeper>();
        services.AddHostedService(sp => sp.GetRequiredService<RetentionSweeper>());
        // The host's stop covers the provider calls' grace, the schedule's wait for its runs, and the server's own wait.
        services.AddOptions<HostOptions>().Configure<IOptions<HandoffOptions>>(
            (host, handoff) => host.ShutdownTimeout = handoff.Value.Embedded.ProviderCallGrace + TimeSpan.FromSeconds(10));
    }

    private static void AddDaprHost(IServiceCollection services)
    {
        var json = HandoffJsonContext.CreateOptions(ServiceJsonContext.Default);
        services.AddDaprClient(client => client.UseJsonSerializationOptions(json));
        services.AddActors(options =>
        {
            options.Actors.RegisterActor<HandoffRunActor>(HandoffRunActor.ActorTypeName);
            options.UseJsonSerialization = true;
            options.JsonSerializerOptions = json;
            // Reentrancy off: one call at a time per run is the point of the actor.
            options.ReentrancyConfig = new ActorReentrancyConfig { Enabled = false };
            // Half daprd's 60 min default: a run's actor is called mostly in the minutes after its event and at its
            // wake-ups (which keep it active), and one called after it went idle only reads its state again.
            options.ActorIdleTimeout = TimeSpan.FromMinutes(30);
            // The drain runs inside a placement round, which the placement service gives 8 s before it drops a daprd
            // that has not answered (cmd/placement --disseminate-timeout) and daprd clamps at 4 s (1.17.7-1.17.x) or
            // 24 s (1.18); while it runs, the actor state calls of the turns it waits for wait too (daprd's placement
            // loop holds their lock), so a longer drain only stalls them. A turn here takes milliseconds: 4 s is
            // plenty, and a turn cut off saves nothing (its save is refused) and is made again. See docs/runbook.md.
            options.DrainOngoingCallTimeout = TimeSpan.FromSeconds(4);
            options.DrainRebalancedActors = true;
        });
        services.AddSingleton<ActorRunOwner>();
        services.AddSingleton<IRunOwner>(sp => sp.GetRequiredService<ActorRunOwner>());
        services.AddSingleton(sp => ActivatorUtilities.CreateInstance<BackgroundRounds>(sp, (IRoundRecorder)sp.GetRequiredService<ActorRunOwner>()));
        services.AddSingleton<SidecarStarts>();
        services.AddSingleton<LocalRecentRuns>();
        services.AddSingleton<IRecentRuns>(sp => sp.GetRequiredService<LocalRecentRuns>());
        services.AddHostedService<SidecarStartup>();
        // The host's stop covers the drain and then the server's own wait for requests still open.
        services.AddOptions<HostOptions>().Configure<IOptions<HandoffOptions>>(
            (host, handoff) => host.ShutdownTimeout = handoff.Value.Dapr.ShutdownDrain + TimeSpan.FromSeconds(10));
    }
}
