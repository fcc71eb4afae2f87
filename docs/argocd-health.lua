-- Argo CD health check for rampart.dev/HardeningProfile (see docs/gitops.md).
-- Written for Argo CD's Lua (5.1): reads `obj`, returns {status, message}.
--   Progressing  the operator has not seen this generation yet, or it is still converging
--   Degraded     it waits for a person: an invalid spec, namespaces held by another profile,
--                a stalled rotation, a name taken by an object Rampart did not create
--                (the Stalled condition)
--   Suspended    Audit mode with drift: nothing is wrong with the profile, but it enforces
--                nothing until its mode is Enforce; the drift is in status.drift
--   Healthy      Ready (in Audit: the cluster matches the profile)
local hs = {}

local function condition(conditions, type_)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function said(c)
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Rampart operator to report status"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Rampart operator to act on generation " .. tostring(generation)
  return hs
end

local conditions = status.conditions
local stalled = condition(conditions, "Stalled")
local invalid = condition(conditions, "InvalidSpec")
if invalid ~= nil and invalid.status == "True" then
  hs.status = "Degraded"
  hs.message = said(invalid)
  return hs
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = said(stalled)
  return hs
end

local ready = condition(conditions, "Ready")
if ready ~= nil and ready.status == "True" then
  local drifted = condition(conditions, "Drifted")
  local audit = obj.spec ~= nil and obj.spec.mode == "Audit"
  if audit and drifted ~= nil and drifted.status == "True" then
    hs.status = "Suspended"
    hs.message = said(ready)
    return hs
  end
  hs.status = "Healthy"
  hs.message = said(ready)
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = said(ready)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
