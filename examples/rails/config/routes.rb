# frozen_string_literal: true

Rails.application.routes.draw do
  resources :devices, only: %i[create destroy]
end
