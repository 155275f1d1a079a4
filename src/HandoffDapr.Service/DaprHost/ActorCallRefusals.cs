using System.Text.Json;
using HandoffDapr.Service.Api;

namespace HandoffDapr.Service.DaprHost;

/// <summary>
/// Around the SDK's actor routes (<c>actors/…</c>). Any app may call an actor type through its own sidecar, and daprd
/// relays the call as it came (without <c>APP_API_TOKEN</c>, anyone reaching the port may send one): a body that is not
/// JSON of the method's parameter, or a method or actor type this app does not have, is the caller's mistake. The SDK
/// lets each escape as an exception, which would be a 500 and an error with a stack trace in the log; here they are a
/// 400 or a 404 problem. A turn that fails is not touched: it is thrown from the actor as its own exception type.
/// </summary>
internal static class ActorCallRefusals
{
    /// <summary>A reminder's firing as daprd's Scheduler sends it: no data (the actor registers none), empty times.</summary>
    private static readonly byte[] SchedulerReminderBody = """{"data":null,"dueTime":"","period":""}"""u8.ToArray();

    /// <param name="bodyLimit">The largest body of an actor call (the routes' request size limit).</param>
    public static async Task InvokeAsync(HttpContext context, RequestDelegate call, long bodyLimit)
    {
        // The only type this app hosts (the SDK would throw InvalidOperationException, which is too broad to catch).
        if (context.Request.RouteValues["actorTypeName"] is string type && type != HandoffRunActor.ActorTypeName)
        {
            await Problems.NoSuchEndpoint().ExecuteAsync(context);
            return;
        }

        // The actor registers no timers, so daprd never fires one: a timer call came from elsewhere. The SDK would run
        // whatever public method of the actor its body names (outside the actor's interface), and throw, a 500, for a
        // body without one.
        if (context.Request.RouteValues.ContainsKey("timerName"))
        {
            await Problems.NoSuchEndpoint().ExecuteAsync(context);
            return;
        }

        // The actor reads a reminder by its name alone (the Scheduler sends empty times; see
        // HandoffRunActor.ReceiveReminderAsync), but the SDK reads the body first and threw, a 500, at shapes it does not
        // expect: data that is not base64 (a reminder registered elsewhere with JSON data), a time null or in another form
        // ("1h"), a body with neither time. daprd then fires it again, to the same end. A body that is not a JSON object is
        // refused as any other actor call's; any object is handed on as the Scheduler writes one.
        if (context.Request.RouteValues.ContainsKey("reminderName"))
        {
            var (body, problem) = await RequestBody.ReadAsync(context.Request, bodyLimit, context.RequestAborted);
            if (body is null)
            {
                await problem!.ExecuteAsync(context);
                return;
            }

            using (body)
            {
                if (!IsJsonObject(body.Memory))
                {
                    await Problems.InvalidBody("The reminder call's body is not a JSON object.").ExecuteAsync(context);
                    return;
                }
            }

            context.Request.Body = new MemoryStream(SchedulerReminderBody, writable: false);
            context.Request.ContentLength = SchedulerReminderBody.Length;
        }

        try
        {
            await call(context);
        }
        catch (JsonException) when (!context.Response.HasStarted)
        {
            // Thrown by the SDK's reading of the body, before the actor runs (the actor's own faults are turned into
            // ActorTurnFailedException).
            await Problems.InvalidBody("The actor call's body is not JSON of the method's parameter.").ExecuteAsync(context);
        }
        catch (MissingMethodException) when (!context.Response.HasStarted)
        {
            await Problems.NoSuchEndpoint().ExecuteAsync(context);
        }
        catch (NullActorArgumentException) when (!context.Response.HasStarted)
        {
            await Problems.InvalidBody("The actor call's body is JSON null, not the method's parameter.").ExecuteAsync(context);
        }
    }

    /// <summary>
    /// For an actor method whose body was JSON <c>null</c>: the SDK reads it as a null argument and calls the method,
    /// where it would be a NullReferenceException (a 500, or a failed turn logged as the store's fault). Returned as a
    /// faulted task, not thrown: the SDK calls the method by reflection, which would wrap a thrown one.
    /// </summary>
    public static Task<T> NullArgument<T>() => Task.FromException<T>(new NullActorArgumentException());

    private sealed class NullActorArgumentException() : Exception("The actor call's argument is null.");

    private static bool IsJsonObject(ReadOnlyMemory<byte> body)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            return document.RootElement.ValueKind == JsonValueKind.Object;
        }
        catch (JsonException)
        {
            return false;
        }
    }
}
